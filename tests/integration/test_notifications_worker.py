"""Push notifications end to end: a real Celery worker process on the Redis broker, real daphne
and WebSocket connections, and real HTTP receivers on loopback (issue 5's required tests).

Needs Redis (the broker, and presence shared between processes): skipped on the embedded
defaults, where tests/notifications/test_delivery.py covers the eager path instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.celery import app as celery_app
from conversations.models import Conversation
from harness.polling import holds_within
from harness.server import REPO, DaphneServer, process_stop
from notifications.models import DeadLetter, Notification
from tests.builders import Dev, make_conversation, make_dev
from tests.integration import daphne as live_servers
from tests.messaging.test_gateway import send_frame
from tests.messaging.wsclient import Socket
from tests.notifications.helpers import send, signature_valid, webhook_register
from tests.notifications.receiver import Receiver, running_receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis for the Celery broker (REDIS_URL)"),
]

COALESCE_S = 3.0
MAX_RETRIES = 2  # three attempts in all
WORKER_ENV = {
    "E2EE_NOTIFY_COALESCE_S": str(COALESCE_S),
    "E2EE_NOTIFY_MAX_RETRIES": str(MAX_RETRIES),
    "E2EE_NOTIFY_RETRY_BASE_S": "0.05",
    "E2EE_NOTIFY_HTTP_TIMEOUT_S": "3",
    "E2EE_NOTIFY_ALLOW_PRIVATE_URLS": "1",
}


@pytest.fixture(autouse=True)
def _loopback_targets(settings: Any) -> None:
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = True  # the receivers listen on 127.0.0.1


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`celery -A config worker` on the test database and the suite's broker; its log path."""
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    broker = str(celery_app.conf.broker_url)
    celery_app.control.purge()  # tasks left by earlier runs are not this run's business
    env = {
        **os.environ,
        **WORKER_ENV,
        "DATABASE_URL": live_servers.test_database_url(),
        "E2EE_CELERY_BROKER_URL": broker,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-c", "1"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = holds_within(
            lambda: " ready." in log_path.read_text(errors="replace") or process.poll() is not None, timeout=60
        )
        assert ready and process.poll() is None, log_path.read_text(errors="replace")
        yield log_path
    finally:
        process_stop(process)


@pytest.fixture
def live(daphne_factory: Callable[..., DaphneServer]) -> DaphneServer:
    return daphne_factory(extra_env={**WORKER_ENV, "E2EE_CELERY_BROKER_URL": str(celery_app.conf.broker_url)})


def _settled(receiver: Receiver, count: int, *, quiet: float = COALESCE_S + 1.0) -> bool:
    """`count` requests arrived and nothing more came for `quiet` seconds (polled, with deadline)."""
    if not holds_within(lambda: receiver.count() >= count, timeout=30):
        return False
    time.sleep(quiet)  # no race: asserting that nothing further arrives needs an interval
    return receiver.count() == count


def test_offline_device_gets_one_push_for_a_burst_over_websocket(
    worker: Path, live: DaphneServer, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([200]) as receiver:
        secret = webhook_register(bob, receiver.url)
        socket = Socket.open(live.url, alice.token)
        try:
            for index in range(20):
                socket.send(send_frame(alice, conversation, frame_id=f"s{index}"))
            for _ in range(20):
                socket.expect("sent")
        finally:
            socket.connection.close()
        assert _settled(receiver, 1)

    request = receiver.requests[0]
    assert signature_valid(secret, request.headers, request.body)
    assert Notification.objects.get().status == Notification.Status.SENT


def test_device_with_a_live_websocket_gets_no_push(
    worker: Path, live: DaphneServer, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    carol = make_dev(user=bob.user)  # bob's second device, offline: shows when the wake-ups are done
    with running_receiver([200]) as online, running_receiver([200]) as offline:
        webhook_register(bob, online.url)
        webhook_register(carol, offline.url)
        socket = Socket.open(live.url, bob.token)
        try:
            send(alice, conversation)
            assert _settled(offline, 1)
        finally:
            socket.connection.close()

    assert online.requests == []


def test_muted_conversation_gets_no_push(worker: Path, alice: Dev, bob: Dev, conversation: Conversation) -> None:
    carol = make_dev()
    other = make_conversation(alice, bob.user, carol.user)
    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        assert bob.client().put(f"/api/v1/conversations/{conversation.pk}/mute").status_code == 204
        send(alice, conversation)
        send(alice, other)  # not muted: bob is woken for this one only
        assert _settled(receiver, 1)


def test_receiver_failing_twice_then_succeeding_gets_one_delivery(
    worker: Path, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([500, 500, 200]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)
        assert _settled(receiver, 3)

    assert [r.answered for r in receiver.requests] == [500, 500, 200]
    ids = {r.headers["x-e2ee-notification-id"] for r in receiver.requests}
    notification = Notification.objects.get()
    assert ids == {str(notification.pk)}
    assert (notification.status, notification.attempts) == (Notification.Status.SENT, 3)
    assert not DeadLetter.objects.exists()


def test_permanently_failing_receiver_ends_in_one_dead_letter(
    worker: Path, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([500]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)
        assert holds_within(lambda: DeadLetter.objects.exists(), timeout=30)
        assert _settled(receiver, 1 + MAX_RETRIES, quiet=1.0)

    dead = DeadLetter.objects.get()
    assert (dead.device_id, dead.backend, dead.attempts, dead.last_error) == (
        bob.device.pk,
        "webhook",
        1 + MAX_RETRIES,
        "webhook answered 500",
    )
    assert Notification.objects.get().status == Notification.Status.DEAD


def test_offline_device_gets_one_push_for_a_burst_over_rest(
    worker: Path, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        started = time.monotonic()
        for _ in range(20):
            send(alice, conversation)  # one fan-out task each: coalescing happens in the worker
        took = time.monotonic() - started
        assert took < COALESCE_S, f"the burst took {took:.1f} s, longer than the coalescing delay"
        assert _settled(receiver, 1)

    assert Notification.objects.count() == 1


def test_a_delivery_task_handed_out_twice_sends_once(
    worker: Path, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    from notifications.tasks import notification_deliver

    send(alice, conversation)  # before bob has a target: no wake-up of its own, but one unread
    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        notification = Notification.objects.create(device=bob.device)
        for _ in range(2):  # what the broker does after a worker died before acknowledging
            notification_deliver.apply_async((str(notification.pk),))
        assert _settled(receiver, 1, quiet=2.0)

    assert receiver.requests[0].headers["x-e2ee-notification-id"] == str(notification.pk)
