"""Wake-ups on the embedded default: eager tasks, no broker, a real receiver on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conversations.models import Conversation
from notifications.models import DeadLetter, Notification
from notifications.services import dead_letter_replay
from tests.builders import Dev
from tests.notifications.helpers import mark_connected, mark_disconnected, send, signature_valid, webhook_register
from tests.notifications.receiver import running_receiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bob_connected(bob: Dev) -> Iterator[Dev]:
    mark_connected(bob)
    yield bob
    mark_disconnected(bob)


def test_offline_device_gets_a_signed_content_free_wake_without_a_broker(
    alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([200]) as receiver:
        secret = webhook_register(bob, receiver.url)
        send(alice, conversation)

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    body = json.loads(request.body)
    notification = Notification.objects.get()
    assert body == {
        "type": "wake",
        "notification_id": str(notification.pk),
        "device_id": str(bob.device.pk),
        "conversation_hint": None,
        "sent_at": body["sent_at"],
    }
    assert request.headers["x-e2ee-notification-id"] == str(notification.pk)
    assert signature_valid(secret, request.headers, request.body)
    assert notification.status == Notification.Status.SENT and notification.attempts == 1


def test_sender_is_not_woken_by_its_own_message(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    with running_receiver([200]) as receiver:
        webhook_register(alice, receiver.url)
        send(alice, conversation)

    assert receiver.requests == []


def test_connected_device_gets_no_wake(alice: Dev, bob_connected: Dev, conversation: Conversation) -> None:
    with running_receiver([200]) as receiver:
        webhook_register(bob_connected, receiver.url)
        send(alice, conversation)

    assert receiver.requests == []
    assert not Notification.objects.exists()


def test_muted_conversation_gets_no_wake(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        assert bob.client().put(f"/api/v1/conversations/{conversation.pk}/mute").status_code == 204
        send(alice, conversation)

    assert receiver.requests == []


def test_receiver_failing_twice_gets_the_wake_once_with_one_id(
    alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([500, 500, 200]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)

    assert [r.answered for r in receiver.requests] == [500, 500, 200]
    assert len({r.headers["x-e2ee-notification-id"] for r in receiver.requests}) == 1
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == (Notification.Status.SENT, 3)
    assert not DeadLetter.objects.exists()


def test_permanently_failing_receiver_ends_in_one_dead_letter(
    alice: Dev, bob: Dev, conversation: Conversation, settings: object
) -> None:
    with running_receiver([503]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)

    notification = Notification.objects.get()
    dead = DeadLetter.objects.get()
    assert len(receiver.requests) == 1 + 5  # E2EE_NOTIFY_MAX_RETRIES
    assert notification.status == Notification.Status.DEAD
    assert (dead.notification_id, dead.device_id, dead.backend, dead.attempts) == (
        notification.pk,
        bob.device.pk,
        "webhook",
        6,
    )
    assert dead.last_error == "webhook answered 503"


def test_replayed_dead_letter_is_delivered_under_the_same_id(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    with running_receiver([503] * 6 + [200]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)
        dead = DeadLetter.objects.get()

        assert dead_letter_replay(dead_letter=dead) is True

    assert receiver.requests[-1].answered == 200
    assert {r.headers["x-e2ee-notification-id"] for r in receiver.requests} == {str(dead.notification_id)}
    dead.refresh_from_db()
    assert dead.replayed_at is not None and dead.replays == 1
    assert Notification.objects.get().status == Notification.Status.SENT
    assert dead_letter_replay(dead_letter=dead) is False


def test_gone_receiver_is_dead_lettered_without_retries(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    with running_receiver([410]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)

    assert len(receiver.requests) == 1
    assert DeadLetter.objects.get().attempts == 1


def test_redelivered_delivery_task_sends_nothing_twice(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    from notifications.tasks import notification_deliver

    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)
        notification_id = str(Notification.objects.get().pk)
        notification_deliver.apply(args=(notification_id,))  # the broker hands it out again
        notification_deliver.apply(args=(str(uuid.uuid4()),))  # and one for a pruned notification

    assert len(receiver.requests) == 1


def test_device_that_acknowledged_everything_is_skipped(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    from messaging.services import CursorAdvance, delivery_cursors_advance
    from notifications.services import notification_claim

    with running_receiver([200]) as receiver:
        webhook_register(bob, receiver.url)
        mark_connected(bob)
        try:
            seq = send(alice, conversation)["seq"]
        finally:
            mark_disconnected(bob)
        notification = Notification.objects.create(device=bob.device)
        delivery_cursors_advance([CursorAdvance(bob.device.pk, conversation.pk, seq, seq)])

        assert notification_claim(notification_id=notification.pk).target is None

    notification.refresh_from_db()
    assert notification.status == Notification.Status.SKIPPED
    assert receiver.requests == []


def test_embedded_default_delivers_from_the_flusher_thread_not_the_request(
    alice: Dev, bob: Dev, conversation: Conversation, settings: Any
) -> None:
    from unittest import mock

    from harness.polling import holds_within
    from notifications import services
    from tests.builders import envelope_json

    settings.E2EE_NOTIFY_FLUSH_MS = 300
    real_run = services._WindowBuffer._run.__get__(services.window_buffer)
    with running_receiver([200]) as receiver, mock.patch.object(services.window_buffer, "_run", real_run):
        webhook_register(bob, receiver.url)
        response = alice.client().post(
            f"/api/v1/conversations/{conversation.pk}/messages", envelope_json(alice), format="json"
        )
        assert response.status_code == 201
        assert receiver.requests == []  # the send returned before any delivery started

        assert holds_within(lambda: Notification.objects.filter(status=Notification.Status.SENT).exists(), timeout=20)
        services.window_buffer._thread = None  # retire the real thread: other tests flush themselves
    assert len(receiver.requests) == 1
