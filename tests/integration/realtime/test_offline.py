"""Catch-up: a device that was offline while messages were sent gets all of them on reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harness.polling import wait_until
from harness.provision import Population
from harness.server import DaphneServer
from harness.wsclient import RealtimeDevice
from tests.integration.realtime.delivery import assert_delivered_exactly_once_in_order

OFFLINE_MESSAGES = 200


def test_device_offline_during_200_sends_gets_all_in_order_on_reconnect(
    daphne_factory: Callable[..., DaphneServer],
    populate: Callable[..., Population],
    names: Callable[[str], str],
) -> None:
    server = daphne_factory()
    alice, bob = names("alice"), names("bob")
    population = populate(server.url, usernames=[alice, bob], devices_per_user=1, conversations=[[alice, bob]])
    alice_profile, bob_profile = population.profiles
    [conversation] = population.conversations

    async def scenario() -> tuple[RealtimeDevice, RealtimeDevice, int]:
        sender = RealtimeDevice(alice_profile, [server.url])
        receiver = RealtimeDevice(bob_profile, [server.url])
        sender.start()
        receiver.start()
        try:
            # Given bob was connected once, then went away.
            await wait_until(lambda: sender.connected.is_set() and receiver.connected.is_set(), timeout=30, what="up")
            await receiver.close()
            # When alice sends 200 messages while bob is away.
            for i in range(OFFLINE_MESSAGES):
                sender.send_text(conversation, f"offline #{i}")
            await wait_until(lambda: not sender.outbox, timeout=60, what="all 200 sends acknowledged")
            assert receiver.delivered_total() == 0
            # And bob comes back (same device, same state: cursor 0).
            back = RealtimeDevice(bob_profile, [server.url])
            back.conversations = receiver.conversations
            back.start()
            try:
                waited = await wait_until(
                    lambda: back.conversations[conversation].contiguous >= OFFLINE_MESSAGES,
                    timeout=60,
                    what="all 200 messages after reconnecting",
                )
                await wait_until(back.caught_up.is_set, timeout=30, what="caught_up frame")
            finally:
                await back.close()
            return sender, back, int(waited * 1000)
        finally:
            await sender.close()

    sender, back, waited_ms = asyncio.run(scenario())

    # Then bob holds all 200, in order, each once, decrypted.
    assert_delivered_exactly_once_in_order([sender, back])
    released = back.released(conversation)
    assert [r.body for r in released] == [f"offline #{i}" for i in range(OFFLINE_MESSAGES)]
    assert [r.seq for r in released] == list(range(1, OFFLINE_MESSAGES + 1))
    assert back.stats.out_of_order == 0
    print(f"catch-up of {OFFLINE_MESSAGES} messages took {waited_ms} ms; duplicates {back.stats.duplicates}")
