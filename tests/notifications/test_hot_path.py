"""The send path's share of notifications: nothing without targets, one enqueue per batch."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from conversations.models import Conversation
from messaging.services import SendRequest, envelope_send_batch
from notifications import services
from tests.builders import Dev, envelope_content, make_conversation
from tests.notifications.helpers import webhook_register

pytestmark = pytest.mark.django_db


def _batch(dev: Dev, conversation: Conversation, size: int) -> list[SendRequest]:
    return [SendRequest(dev.device, dev.device.pk, envelope_content(conversation)) for _ in range(size)]


def test_no_push_target_anywhere_means_no_enqueue_and_no_extra_query(
    alice: Dev, conversation: Conversation, django_capture_on_commit_callbacks: Any, django_assert_max_num_queries: Any
) -> None:
    with mock.patch.object(services, "_enqueue") as enqueue, django_capture_on_commit_callbacks(execute=True):
        with django_assert_max_num_queries(100) as queries:
            envelope_send_batch(_batch(alice, conversation, 50))

    enqueue.assert_not_called()
    # The only mention of push targets rides on the conversation lock query.
    assert not [
        q for q in queries.captured_queries if "notifications_" in q["sql"] and "FROM conversations_" not in q["sql"]
    ]


def test_a_batch_enqueues_one_fan_out_whatever_its_size(
    alice: Dev, bob: Dev, conversation: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_register(bob, "http://127.0.0.1:9/hook")
    with mock.patch.object(services, "_enqueue") as enqueue:
        with django_capture_on_commit_callbacks(execute=True):
            envelope_send_batch(_batch(alice, conversation, 50))
        services.window_buffer.flush()

    enqueue.assert_called_once()
    name, (windows,), _ = enqueue.call_args.args
    assert name == "notifications.fan_out"
    assert windows == [(conversation.pk.hex, 50, [alice.device.pk.hex])]


def test_batches_are_merged_into_one_fan_out_per_flush(
    alice: Dev, bob: Dev, conversation: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_register(bob, "http://127.0.0.1:9/hook")
    other = make_conversation(bob, alice.user)
    # No flusher thread here (conftest): the test flushes itself.
    with mock.patch.object(services, "_enqueue") as enqueue:
        with django_capture_on_commit_callbacks(execute=True):
            envelope_send_batch(_batch(alice, conversation, 3))
        with django_capture_on_commit_callbacks(execute=True):
            envelope_send_batch(_batch(alice, conversation, 2) + _batch(bob, other, 1))
        enqueue.assert_not_called()
        services.window_buffer.flush()

    enqueue.assert_called_once()
    name, (windows,), _ = enqueue.call_args.args
    assert name == "notifications.fan_out"
    assert sorted(windows) == sorted(
        [(conversation.pk.hex, 5, [alice.device.pk.hex]), (other.pk.hex, 1, [bob.device.pk.hex])]
    )


def test_rolled_back_batch_enqueues_nothing(alice: Dev, conversation: Conversation, bob: Dev) -> None:
    webhook_register(bob, "http://127.0.0.1:9/hook")
    with mock.patch.object(services, "_enqueue") as enqueue:
        envelope_send_batch(_batch(alice, conversation, 3))  # the test transaction never commits

    enqueue.assert_not_called()


def test_a_target_registered_elsewhere_counts_from_the_next_batch(
    alice: Dev, bob: Dev, conversation: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    from notifications.models import PushTarget

    with mock.patch.object(services.window_buffer, "add") as add:
        with django_capture_on_commit_callbacks(execute=True):
            envelope_send_batch(_batch(alice, conversation, 1))
        PushTarget.objects.create(device=bob.device, kind="webhook", url="http://127.0.0.1:9/", secret="s")
        with django_capture_on_commit_callbacks(execute=True):
            envelope_send_batch(_batch(alice, conversation, 1))

    add.assert_called_once()
