from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from common.realtime import conversation_group
from common.testing import PublishedEvent
from conversations.errors import ConversationNotFoundError
from conversations.models import Conversation
from conversations.services import chat_key_epoch_upload
from messaging.errors import (
    ClientMessageIdReusedError,
    EnvelopeSenderMismatchError,
    EnvelopeStaleEpochError,
    EnvelopeTooLargeError,
    EnvelopeUnsupportedVersionError,
)
from messaging.models import DeliveryCursor, Message
from messaging.serializers import EnvelopeSerializer
from messaging.services import CursorAdvance, delivery_cursors_advance, envelope_send
from tests.builders import (
    Dev,
    active_devices,
    envelope_content,
    make_conversation,
    make_dev,
    manifest_upload,
    uploads_for,
)
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def _send(dev: Dev, conversation: Conversation, **kwargs: Any) -> Any:
    return envelope_send(
        device=dev.device, sender_device_id=dev.device.id, content=envelope_content(conversation, **kwargs)
    )


def test_sequence_numbers_are_1_to_n_across_senders(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    results = [_send(dev, conversation) for dev in (alice, bob, alice, alice, bob)]

    assert [r.message.seq for r in results] == [1, 2, 3, 4, 5]
    assert all(r.created for r in results)
    conversation.refresh_from_db()
    assert conversation.last_seq == 5
    assert list(Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)) == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_message_is_stored_as_sent(alice: Dev, conversation: Conversation) -> None:
    content = envelope_content(conversation)
    result = envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    stored = Message.objects.get(pk=result.message.pk)
    assert (stored.version, stored.epoch, stored.sender_device_id) == (1, 1, alice.device.id)
    assert bytes(stored.client_message_id) == content.client_message_id
    assert bytes(stored.nonce) == content.nonce
    assert bytes(stored.ciphertext) == content.ciphertext
    assert bytes(stored.signature) == content.signature


def test_identical_resend_returns_original_without_new_row(alice: Dev, conversation: Conversation) -> None:
    content = envelope_content(conversation)
    first = envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    _send(alice, conversation)

    again = envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)

    assert not again.created
    assert again.message.pk == first.message.pk
    assert again.message.seq == 1
    assert Message.objects.count() == 2


@pytest.mark.parametrize("field", ["nonce", "ciphertext", "signature", "epoch"])
def test_resend_with_different_content_is_refused(alice: Dev, conversation: Conversation, field: str) -> None:
    content = envelope_content(conversation)
    envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    new_value: Any = 2 if field == "epoch" else os.urandom(len(getattr(content, field)))
    changed = replace(content, **{field: new_value})
    with pytest.raises(ClientMessageIdReusedError):
        envelope_send(device=alice.device, sender_device_id=alice.device.id, content=changed)
    assert Message.objects.count() == 1


def test_same_client_id_in_another_conversation_is_refused(alice: Dev, conversation: Conversation) -> None:
    content = envelope_content(conversation)
    envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    other = make_conversation(alice)
    with pytest.raises(ClientMessageIdReusedError):
        envelope_send(
            device=alice.device, sender_device_id=alice.device.id, content=replace(content, conversation_id=other.pk)
        )


def test_same_client_id_from_another_device_is_a_new_message(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    content = envelope_content(conversation)
    envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    result = envelope_send(device=bob.device, sender_device_id=bob.device.id, content=content)
    assert result.created
    assert result.message.seq == 2


def test_identical_resend_after_epoch_rotation_still_returns_original(
    alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    content = envelope_content(conversation)
    envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    chat_key_epoch_upload(
        device=bob.device,
        conversation_id=conversation.pk,
        number=2,
        wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
        manifest=manifest_upload(),
    )
    again = envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    assert (again.created, again.message.seq) == (False, 1)


@pytest.mark.parametrize("epoch", [0, 2, 7])
def test_stale_epoch_is_refused_with_current_epoch(alice: Dev, conversation: Conversation, epoch: int) -> None:
    with pytest.raises(EnvelopeStaleEpochError) as caught:
        _send(alice, conversation, epoch=epoch)
    assert caught.value.extra == {"current_epoch": 1}
    assert not Message.objects.exists()
    conversation.refresh_from_db()
    assert conversation.last_seq == 0


def test_old_epoch_is_stale_after_rotation(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    chat_key_epoch_upload(
        device=bob.device,
        conversation_id=conversation.pk,
        number=2,
        wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
        manifest=manifest_upload(),
    )
    with pytest.raises(EnvelopeStaleEpochError) as caught:
        _send(alice, conversation, epoch=1)
    assert caught.value.extra == {"current_epoch": 2}
    assert _send(alice, conversation, epoch=2).message.seq == 1


@override_settings(E2EE_MAX_CIPHERTEXT_BYTES=100)
def test_ciphertext_above_limit_is_refused(alice: Dev, conversation: Conversation) -> None:
    assert _send(alice, conversation, ciphertext=os.urandom(100)).created
    with pytest.raises(EnvelopeTooLargeError) as caught:
        _send(alice, conversation, ciphertext=os.urandom(101))
    assert caught.value.status == 413
    assert caught.value.extra == {"max_bytes": 100}
    assert Message.objects.count() == 1


@pytest.mark.parametrize("version", [0, 2, -1, 2**70])
def test_unsupported_version_is_refused(alice: Dev, conversation: Conversation, version: int) -> None:
    with pytest.raises(EnvelopeUnsupportedVersionError):
        _send(alice, conversation, version=version)
    assert not Message.objects.exists()


def test_sender_must_be_the_authenticated_device(alice: Dev, conversation: Conversation) -> None:
    phone = DeviceFactory.create(user=alice.user)
    for sender_device_id in (phone.id, uuid.uuid4()):
        with pytest.raises(EnvelopeSenderMismatchError):
            envelope_send(
                device=alice.device, sender_device_id=sender_device_id, content=envelope_content(conversation)
            )
    assert not Message.objects.exists()


def test_non_member_cannot_send_and_learns_nothing(conversation: Conversation) -> None:
    mallory = make_dev()
    # Even an envelope that is wrong in every way is answered "not found".
    content = envelope_content(conversation, version=9, epoch=9)
    with pytest.raises(ConversationNotFoundError):
        envelope_send(device=mallory.device, sender_device_id=uuid.uuid4(), content=content)
    assert not Message.objects.exists()


def test_send_publishes_one_event_to_the_conversation_group_after_commit(
    alice: Dev,
    conversation: Conversation,
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = _send(alice, conversation)

    # One publish reaches every member device's connections, wherever they are (they joined it).
    assert [p.group for p in published] == [conversation_group(conversation.id)]
    event = published[0].event
    assert event["type"] == "conversation.messages"
    assert event["conversation_id"] == str(conversation.id)
    [(seq, origin, frame)] = event["messages"]
    assert (seq, origin) == (result.message.seq, "")
    # The pushed frame carries exactly the Envelope the REST API returns.
    envelope = dict(EnvelopeSerializer(Message.objects.select_related("sender_device__user").get()).data)
    assert json.loads(frame) == {"type": "message", "conversation_id": str(conversation.id), "envelope": envelope}


@pytest.mark.parametrize("problem", ["stale_epoch", "sender_mismatch", "reused_client_id", "identical_resend"])
def test_refused_or_replayed_send_publishes_nothing(
    alice: Dev,
    conversation: Conversation,
    published: list[PublishedEvent],
    django_capture_on_commit_callbacks: Any,
    problem: str,
) -> None:
    content = envelope_content(conversation)
    envelope_send(device=alice.device, sender_device_id=alice.device.id, content=content)
    attempts = {
        "stale_epoch": lambda: _send(alice, conversation, epoch=5),
        "sender_mismatch": lambda: envelope_send(
            device=alice.device, sender_device_id=uuid.uuid4(), content=envelope_content(conversation)
        ),
        "reused_client_id": lambda: envelope_send(
            device=alice.device, sender_device_id=alice.device.id, content=replace(content, nonce=os.urandom(12))
        ),
        "identical_resend": lambda: envelope_send(
            device=alice.device, sender_device_id=alice.device.id, content=content
        ),
    }
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            attempts[problem]()
        except Exception as exc:  # noqa: BLE001 - each refusal is asserted in its own test
            assert getattr(exc, "status", 0) >= 400
    assert callbacks == []
    assert published == []


def test_send_cost_does_not_grow_with_history(alice: Dev, conversation: Conversation) -> None:
    with CaptureQueriesContext(connection) as first:
        _send(alice, conversation)
    for _ in range(30):
        _send(alice, conversation)
    with CaptureQueriesContext(connection) as later:
        _send(alice, conversation)
    assert len(later.captured_queries) == len(first.captured_queries)
    # No counting or scanning of the message table on the send path.
    assert not any("COUNT(" in q["sql"].upper() for q in later.captured_queries)


def test_cursor_positions_beyond_the_last_seq_are_stored_as_the_last_seq(
    alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    _send(alice, conversation)
    delivery_cursors_advance(
        [
            CursorAdvance(bob.device.id, conversation.id, delivered_seq=1_000_000, read_seq=5),
            CursorAdvance(alice.device.id, conversation.id, delivered_seq=1, read_seq=0),
        ]
    )
    cursors = {c.device_id: (c.delivered_seq, c.read_seq) for c in DeliveryCursor.objects.all()}
    assert cursors == {bob.device.id: (1, 1), alice.device.id: (1, 0)}
    _send(alice, conversation)
    delivery_cursors_advance([CursorAdvance(bob.device.id, conversation.id, delivered_seq=2, read_seq=0)])
    assert DeliveryCursor.objects.get(device=bob.device).delivered_seq == 2
