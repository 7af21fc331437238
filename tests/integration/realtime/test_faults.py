"""Delivery under faults: a server process killed with SIGKILL and restarted, Redis restarted (every
key lost), client connections cut at random; 2,000+ messages among 3 users with 2 devices each.

Deterministic: faults happen at fixed message counts, the connection to cut is drawn from a seeded
RNG, and every wait is for a condition, with a timeout. Needs PostgreSQL (real concurrency between
two server processes) and starts its own redis-server so it can restart it.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from harness.polling import wait_until
from harness.provision import Population
from harness.redis_server import RedisServer
from harness.server import DaphneServer
from harness.wsclient import RealtimeDevice
from tests.integration.realtime.delivery import (
    acknowledged,
    assert_delivered_exactly_once_in_order,
    missing_deliveries,
)

MESSAGES = 2_100
KILL_SERVER_AT = 500
RESTART_SERVER_AT = 650
RESTART_REDIS_AT = 1_000
DROP_EVERY = 150
SEED = 20261125
# Backpressure for the sending loop: at most this many sends unanswered over all devices.
MAX_OUTSTANDING = 200


@pytest.mark.slow
@pytest.mark.postgres_only
def test_every_acknowledged_message_reaches_every_device_once_in_order_through_faults(
    daphne_factory: Callable[..., DaphneServer],
    populate: Callable[..., Population],
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: two server processes appending concurrently (DATABASE_URL=postgresql://...)")
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary, to run and restart a Redis of its own")

    with RedisServer(log_path=tmp_path / "redis.log") as redis_server:
        env = {"REDIS_URL": redis_server.url}
        servers = [daphne_factory(extra_env=env), daphne_factory(extra_env=env)]
        users = [names("ann"), names("ben"), names("cat")]
        population = populate(
            servers[0].url,
            usernames=users,
            devices_per_user=2,
            conversations=[users, users[:2], users[1:], [users[0], users[2]]],
        )
        devices, settle_s, timeout = asyncio.run(_run(population, servers, redis_server))

    refused = [r.error for d in devices for r in d.sent.values() if r.error is not None]
    counts: dict[str, Any] = {
        "sent": sum(len(d.sent) for d in devices),
        "acknowledged": sum(len(by_seq) for by_seq in acknowledged(devices).values()),
        "refused": len(refused),
        "delivered": [d.delivered_total() for d in devices],
        "duplicates": sum(d.stats.duplicates for d in devices),
        "echoes": sum(d.stats.own_echoes for d in devices),
        "reconnects": sum(d.stats.reconnects for d in devices),
        "drops": sum(d.stats.drops_injected for d in devices),
        "fetches": sum(d.stats.fetches for d in devices),
        "resends": sum(d.stats.resends for d in devices),
        "out_of_order": sum(d.stats.out_of_order for d in devices),
        "settle_s": settle_s,
    }
    print(
        "\nfaults: sent {sent}, acknowledged {acknowledged}, refused {refused}, delivered per device {delivered}, "
        "duplicates dropped {duplicates}, own echoes {echoes}, reconnects {reconnects}, connection drops "
        "{drops}, gap fetches {fetches}, resends {resends}, first arrivals out of order {out_of_order}, "
        "settled in {settle_s:.1f} s".format(**counts)
    )
    if timeout is not None:
        missing = missing_deliveries(devices)
        pytest.fail(f"{timeout}; still missing {missing} deliveries; outboxes {[len(d.outbox) for d in devices]}")
    assert refused == [], refused[:10]
    assert counts["sent"] == counts["acknowledged"] == MESSAGES
    # Each device holds every acknowledged message of its conversations but its own, once, in
    # seq order, each the very message acknowledged to its sender, every one decrypted.
    assert_delivered_exactly_once_in_order(devices)


async def _run(
    population: Population, servers: list[DaphneServer], redis_server: RedisServer
) -> tuple[list[RealtimeDevice], float, TimeoutError | None]:
    rng = random.Random(SEED)
    urls = [s.url for s in servers]
    # Half the devices prefer each process; when theirs is down they fail over to the other.
    devices = [
        RealtimeDevice(profile, urls if i % 2 == 0 else urls[::-1], rng=random.Random(SEED + i), resend_after_s=5)
        for i, profile in enumerate(population.profiles)
    ]
    for device in devices:
        device.start()
    settle_s = float("nan")
    try:
        await wait_until(lambda: all(d.connected.is_set() for d in devices), timeout=30, what="all connected")
        # In creation order (conversation ids are random): the same seed sends the same pattern.
        senders = [(d, cid) for d in devices for cid in population.conversations if cid in d.profile.conversations]
        for n in range(1, MESSAGES + 1):
            device, conversation = senders[rng.randrange(len(senders))]
            device.send_text(conversation, f"#{n} from {device.device_id}")
            if n == KILL_SERVER_AT:
                servers[0].kill()
            if n == RESTART_SERVER_AT:
                await asyncio.to_thread(servers[0].start)
            if n == RESTART_REDIS_AT:
                await asyncio.to_thread(redis_server.restart)
            if n % DROP_EVERY == 0:
                devices[rng.randrange(len(devices))].drop()
            if n % 20 == 0:
                await wait_until(
                    lambda: sum(len(d.outbox) for d in devices) < MAX_OUTSTANDING,
                    timeout=60,
                    what="the outboxes to drain below the backpressure mark",
                )
        started = asyncio.get_running_loop().time()
        await wait_until(lambda: all(not d.outbox for d in devices), timeout=60, what="every send answered")
        await wait_until(
            lambda: missing_deliveries(devices) == 0, timeout=60, what="every acknowledged message delivered"
        )
        settle_s = asyncio.get_running_loop().time() - started
        return devices, settle_s, None
    except TimeoutError as exc:
        return devices, settle_s, exc
    finally:
        for device in devices:
            await device.close()
