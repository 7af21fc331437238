"""The fault suite of issue 13: real SDK devices through crashes, restarts and a bad network.

Two daphne processes behind a failover proxy, PostgreSQL, Redis, a Celery worker and beat, all the
suite's own; 3 people x 2 devices (`RealtimeClient`) send at a fixed rate on a seeded schedule,
with bursts, while a seeded schedule kills a daphne (-9) and restarts it, stops one (SIGSTOP /
SIGCONT), kills Redis (-9) and restarts it, restarts PostgreSQL (`pg_ctl -m immediate restart`),
and drops and stalls every connection at the proxy. Each run asserts what a user would notice:
nothing acknowledged is lost, nothing shows twice, everything decrypts, each sender's messages
keep their order, and every device has everything within 5 s of the last fault. It prints per run
the convergence time, the HTTP 5xx and failed WebSocket sends after the PostgreSQL restart, and
what each device lacked until it converged. A last test kills the worker mid-retry and measures
how late the wake-up arrives.

Run it with `-m fault` (about 3 minutes); without that selection it is skipped before any server
starts. `E2EE_FAULT_LOGS=<dir>` keeps the servers' logs there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from client.session import Session
from harness.polling import holds_within
from tests.fault.conftest import Cluster
from tests.fault.scenario import CONVERGENCE_BOUND_S, Device, FaultRun
from tests.fault.services import NOTIFY_RETRY_BASE_S
from tests.notifications.receiver import Receiver, running_receiver

pytestmark = [pytest.mark.fault, pytest.mark.slow]

SEEDS = [1301, 1302, 1303]
# A killed worker's wake-up must still arrive "within seconds" (issue 13, F3): a new worker's start
# (a few seconds on a loaded machine) plus the retry's countdown (at most NOTIFY_RETRY_BASE_S).
WAKE_UP_BOUND_S = 15.0
WAKE_UP_WAIT_S = 30.0  # how long the measurement waits, so a failure says by how much
KILL_AFTER_S = 0.3  # after the failed attempt: the worker has scheduled its retry by then


@pytest.mark.parametrize("seed", SEEDS)
def test_nothing_acknowledged_is_lost_and_every_device_converges_after_faults(
    seed: int, cluster: Cluster, accounts: list[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devices = [Device(index, session) for index, session in enumerate(accounts)]
    run = FaultRun(seed=seed, stack=cluster.stack, proxy=cluster.proxy, devices=devices, home=tmp_path)
    run.create_conversations()
    report = asyncio.run(run.run())
    worker = cluster.stack.worker
    if worker is not None and not worker.alive():  # F9: the next run needs a worker all the same
        worker.start()
    with capsys.disabled():
        print(f"\n{report.summary()}")
        for note in report.notes[:12]:
            print(f"  {note}")

    assert report.acknowledged > 0
    assert (report.lost, report.duplicates, report.undecryptable, report.out_of_order) == (0, 0, 0, 0)
    assert report.unacknowledged == 0, "messages still queued at the end"
    assert report.refused == 0, report.notes[:5]
    assert report.convergence_s is not None and report.convergence_s <= CONVERGENCE_BOUND_S, report.summary()


def test_a_wake_up_arrives_within_seconds_after_the_worker_is_killed_mid_retry(
    cluster: Cluster, accounts: list[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    """An offline device's wake-up fails once (500); the worker is killed with SIGKILL while the
    retry waits for its countdown, and a new worker is started: the wake-up still arrives."""
    sender, offline = accounts[0], accounts[3]  # ann's first device; ben's second, never connected
    worker = cluster.stack.worker
    assert worker is not None
    cid = sender.create_conversation([offline.username], kind="group").conversation_id
    # 500 then 200, three times: a round whose retry came before the kill is not the case under
    # test (the countdown is random, from 0 s), and is done again with the next message.
    with running_receiver([500, 200] * 3) as receiver:
        offline.push_target_set(kind="webhook", url=receiver.url)
        try:
            for attempt in range(3):
                before = receiver.count()
                sender.send_text(cid, f"wake up {attempt}")
                assert holds_within(_more_than(receiver, before), timeout=30), "no wake-up attempt at all"
                failed_at = time.monotonic()
                time.sleep(KILL_AFTER_S)  # no condition to wait for: the retry is inside the worker
                killed_at = time.monotonic()
                worker.kill()
                if receiver.count() == before + 1:
                    break  # killed mid-retry
                worker.start()
            else:
                pytest.fail("three retries came before the kill: cannot test a kill mid-retry")
            worker.start()
            ready_s = time.monotonic() - killed_at
            arrived = holds_within(_more_than(receiver, before + 1), timeout=WAKE_UP_WAIT_S)
            delay_s = time.monotonic() - killed_at if arrived else None
        finally:
            offline.push_target_delete()
    shown = f"{delay_s:.2f} s" if delay_s is not None else f"> {WAKE_UP_WAIT_S:.0f} s"
    with capsys.disabled():
        print(
            f"\nwake-up after a worker kill: the retry arrived {shown} after the kill (the new worker was "
            f"ready {ready_s:.2f} s after it; the attempt had failed {killed_at - failed_at:.2f} s before it; "
            f"retry countdown at most {NOTIFY_RETRY_BASE_S:.0f} s)"
        )
    assert delay_s is not None and delay_s <= WAKE_UP_BOUND_S


def _more_than(receiver: Receiver, count: int) -> Callable[[], bool]:
    return lambda: receiver.count() > count
