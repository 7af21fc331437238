"""A device that stops reading its socket (and so never acknowledges) delays nobody else.

Delivery latency (send -> decrypted) to the other devices is measured over the same paced send run
twice: with the stalled device offline, and with it connected and stalled. A backlog sent before
(unmeasured) makes its catch-up alone fill most of its window (section 6.4), so during the second
run the server has more than a whole window of pushes for it that it cannot deliver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harness.metrics import latencies_ms, percentile, send_points
from harness.polling import wait_until
from harness.provision import Population
from harness.server import DaphneServer
from harness.wsclient import RealtimeDevice, StalledDevice
from tests.integration.realtime.delivery import assert_delivered_exactly_once_in_order

BACKLOG = 400  # sent before the runs, unpaced and unmeasured
MESSAGES_PER_RUN = 150  # backlog + both runs: more than the default window of 512 unacknowledged pushes
RATE_PER_S = 20  # well below what one sending connection gets through, so the baseline is not queueing
# Generous: the machine is shared. A stalled device that held up others would add seconds (the
# retry interval), not milliseconds.
ALLOWED_P95_FACTOR = 2.0
ALLOWED_P95_SLACK_MS = 100.0


def test_stalled_device_does_not_delay_delivery_to_the_others(
    daphne_factory: Callable[..., DaphneServer],
    populate: Callable[..., Population],
    names: Callable[[str], str],
) -> None:
    server = daphne_factory()
    alice, bob, carol = names("alice"), names("bob"), names("carol")
    population = populate(
        server.url, usernames=[alice, bob, carol], devices_per_user=2, conversations=[[alice, bob, carol]]
    )
    sender_profile, _alice_other, bob_profile, stalled_profile, carol_profile, _carol_other = population.profiles
    [conversation] = population.conversations

    async def paced_run(sender: RealtimeDevice, label: str) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(MESSAGES_PER_RUN):
            # Pacing the offered load, not synchronisation: sleep until this send's slot.
            await asyncio.sleep(max(0.0, start + i / RATE_PER_S - loop.time()))
            sender.send_text(conversation, f"{label} #{i}")

    async def scenario() -> tuple[list[float], list[float], list[RealtimeDevice], int]:
        sender = RealtimeDevice(sender_profile, [server.url])
        receivers = [RealtimeDevice(bob_profile, [server.url]), RealtimeDevice(carol_profile, [server.url])]
        devices = [sender, *receivers]
        for device in devices:
            device.start()
        stalled = StalledDevice(stalled_profile, server.url)
        try:
            await wait_until(lambda: all(d.connected.is_set() for d in devices), timeout=30, what="all connected")

            async def run_and_measure(label: str) -> list[float]:
                before = {d.device_id: d.delivered_total() for d in receivers}
                await paced_run(sender, label)
                await wait_until(lambda: not sender.outbox, timeout=60, what=f"{label}: every send answered")
                await wait_until(
                    lambda: all(d.delivered_total() - before[d.device_id] == MESSAGES_PER_RUN for d in receivers),
                    timeout=60,
                    what=f"{label}: every message at both receivers",
                )
                points = send_points((sender.device_id, r) for r in sender.sent.values())
                records = [
                    r for d in receivers for r in d.released(conversation) if r.body and r.body.startswith(label)
                ]
                return latencies_ms(points, records)

            # Given a backlog for the (offline) stalled device, and a baseline without it.
            for i in range(BACKLOG):
                sender.send_text(conversation, f"backlog #{i}")
            await wait_until(lambda: not sender.outbox, timeout=120, what="backlog: every send answered")
            await wait_until(
                lambda: all(d.delivered_total() == BACKLOG for d in receivers), timeout=120, what="backlog delivered"
            )
            baseline = await run_and_measure("baseline")
            # When it connects (catch-up pushes backlog and baseline into a socket nobody reads)
            # and stays stalled through a second run.
            await stalled.open()
            stalled_run = await run_and_measure("stalled")
            return baseline, stalled_run, devices, stalled.unread_bytes()
        finally:
            stalled.abort()
            for device in devices:
                await device.close()

    baseline, stalled_run, devices, unread = asyncio.run(scenario())

    assert_delivered_exactly_once_in_order(devices)
    base_p50, base_p95 = percentile(baseline, 50), percentile(baseline, 95)
    p50, p95 = percentile(stalled_run, 50), percentile(stalled_run, 95)
    print(
        f"\nlatency to the other devices, ms: without stalled device p50 {base_p50:.1f} p95 {base_p95:.1f} "
        f"max {max(baseline):.1f}; with it p50 {p50:.1f} p95 {p95:.1f} max {max(stalled_run):.1f}; "
        f"bytes waiting unread at the stalled device: {unread}"
    )
    assert len(baseline) == len(stalled_run) == 2 * MESSAGES_PER_RUN
    assert p95 <= ALLOWED_P95_FACTOR * base_p95 + ALLOWED_P95_SLACK_MS, (base_p95, p95)
