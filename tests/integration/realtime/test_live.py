"""Live delivery across server processes: three devices on two daphne processes sharing Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from harness.polling import wait_until
from harness.provision import Population
from harness.server import DaphneServer
from harness.wsclient import RealtimeDevice
from tests.integration.daphne import multi_process_possible
from tests.integration.realtime.delivery import assert_delivered_exactly_once_in_order, missing_deliveries

MESSAGES_PER_DEVICE = 30


@pytest.mark.skipif(
    not multi_process_possible(),
    reason="two server processes make one service only through a shared channel layer: set REDIS_URL",
)
def test_three_devices_on_two_processes_get_every_message_once_in_order(
    daphne_factory: Callable[..., DaphneServer],
    populate: Callable[..., Population],
    names: Callable[[str], str],
) -> None:
    # Given alice (laptop on process 1, phone on process 2) and bob (process 1) in one group.
    first, second = daphne_factory(), daphne_factory()
    alice, bob = names("alice"), names("bob")
    population = populate(first.url, usernames=[alice, bob], devices_per_user=2, conversations=[[alice, bob]])
    laptop, phone, bob_device, _bob_spare = population.profiles
    [conversation] = population.conversations

    async def scenario() -> list[RealtimeDevice]:
        devices = [
            RealtimeDevice(laptop, [first.url]),
            RealtimeDevice(phone, [second.url]),
            RealtimeDevice(bob_device, [first.url]),
        ]
        for device in devices:
            device.start()
        try:
            # caught_up comes once per connection, even when nothing was behind (section 6.2).
            await wait_until(lambda: all(d.caught_up.is_set() for d in devices), timeout=30, what="all caught up")
            # When each device sends in turn, all connected, none reconnecting.
            for i in range(MESSAGES_PER_DEVICE):
                for device in devices:
                    device.send_text(conversation, f"{device.profile.username} {device.device_id} #{i}")
                await wait_until(lambda: all(not d.outbox for d in devices), timeout=30, what="every send answered")
            await wait_until(
                lambda: missing_deliveries(devices) == 0, timeout=30, what="every message at every other device"
            )
            return devices
        finally:
            for device in devices:
                await device.close()

    devices = asyncio.run(scenario())

    # Then every device got each of the others' messages exactly once, in seq order, live.
    delivered = assert_delivered_exactly_once_in_order(devices)
    assert list(delivered.values()) == [2 * MESSAGES_PER_DEVICE] * 3
    for device in devices:
        assert device.stats.out_of_order == 0
        assert device.stats.reconnects == 0
        assert device.stats.errors == []
        texts = [r.body for r in device.released(conversation)]
        # Each sender's own order is kept.
        for other in devices:
            if other is not device:
                mine = [t for t in texts if t is not None and str(other.device_id) in t]
                assert mine == [f"{other.profile.username} {other.device_id} #{i}" for i in range(MESSAGES_PER_DEVICE)]
