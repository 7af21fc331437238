"""Key requests (protocol.md 4.8): filing, listing and answering, with the events after commit."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from common.realtime import device_group
from common.testing import capture_published_events, forbid_writes
from conversations.errors import (
    ConversationNotFoundError,
    EpochNotFoundError,
    KeyRequestClosedError,
    KeyRequestNotFoundError,
)
from conversations.models import Conversation, KeyRequest, WrappedKey
from conversations.selectors import key_request_list_open
from conversations.services import key_request_answer, key_request_file
from devices.models import Device
from tests.accounts.factories import UserFactory
from tests.builders import Dev, make_conversation, make_dev

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Dev:
    return make_dev(user=UserFactory.create(username="alice"))


@pytest.fixture
def alice2(alice: Dev) -> Dev:
    return make_dev(user=alice.user)


@pytest.fixture
def bob() -> Dev:
    return make_dev(user=UserFactory.create(username="bob"))


@pytest.fixture
def conversation(alice: Dev, alice2: Dev, bob: Dev) -> Conversation:
    return make_conversation(alice, bob.user)


def _lose_key(conversation: Conversation, device: Device) -> None:
    WrappedKey.objects.filter(epoch__conversation=conversation, recipient_device=device).delete()


def _answer(answerer: Dev, request: KeyRequest) -> bool:
    return key_request_answer(
        device=answerer.device, request_id=request.pk, wrapped_key=os.urandom(80), signature=os.urandom(64)
    )


def test_file_records_request_and_announces_it_to_other_member_devices(
    conversation: Conversation,
    alice: Dev,
    alice2: Dev,
    bob: Dev,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    _lose_key(conversation, alice2.device)

    with capture_published_events() as published, django_capture_on_commit_callbacks(execute=True):
        filed = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1)

    assert filed.created
    request = KeyRequest.objects.get()
    assert (request.device_id, request.epoch.number, request.served_at) == (alice2.device.pk, 1, None)
    assert {p.group for p in published} == {device_group(alice.device.pk), device_group(bob.device.pk)}
    event = published[0].event
    assert event["type"] == "key_request.filed"
    assert event["key_request"] == {
        "request_id": str(request.pk),
        "conversation_id": str(conversation.pk),
        "epoch": 1,
        "username": "alice",
        "device_id": str(alice2.device.pk),
        "status": "open",
        "created_at": event["key_request"]["created_at"],
    }


def test_file_is_idempotent_and_announces_again(
    conversation: Conversation, alice2: Dev, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    _lose_key(conversation, alice2.device)
    first = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1)

    with capture_published_events() as published, django_capture_on_commit_callbacks(execute=True):
        again = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1)

    assert not again.created
    assert again.request.pk == first.request.pk
    assert KeyRequest.objects.count() == 1
    assert {p.event["key_request"]["request_id"] for p in published} == {str(first.request.pk)}


def test_file_for_a_held_key_is_served_at_once_and_announced_to_nobody(
    conversation: Conversation, alice2: Dev, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with capture_published_events() as published, django_capture_on_commit_callbacks(execute=True):
        filed = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1)

    assert filed.request.served_at is not None
    assert published == []


def test_file_refuses_non_member_and_unknown_epoch(conversation: Conversation, alice2: Dev) -> None:
    outsider = make_dev(user=UserFactory.create(username="carol"))

    with pytest.raises(ConversationNotFoundError):
        key_request_file(device=outsider.device, conversation_id=conversation.pk, epoch=1)
    with pytest.raises(ConversationNotFoundError):
        key_request_file(device=alice2.device, conversation_id=uuid.uuid4(), epoch=1)
    with pytest.raises(EpochNotFoundError):
        key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=2)
    assert KeyRequest.objects.count() == 0


def test_answer_stores_the_wrapped_key_and_tells_the_requester(
    conversation: Conversation, alice: Dev, alice2: Dev, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    _lose_key(conversation, alice2.device)
    request = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1).request

    with capture_published_events() as published, django_capture_on_commit_callbacks(execute=True):
        stored = _answer(alice, request)

    assert stored
    key = WrappedKey.objects.get(epoch__conversation=conversation, recipient_device=alice2.device)
    assert key.wrapping_device_id == alice.device.pk
    request.refresh_from_db()
    assert request.served_at is not None and request.served_by_id == alice.device.pk
    assert [(p.group, p.event) for p in published] == [
        (
            device_group(alice2.device.pk),
            {
                "type": "key_request.served",
                "request_id": str(request.pk),
                "conversation_id": str(conversation.pk),
                "epoch": 1,
            },
        )
    ]


def test_second_answer_stores_nothing(conversation: Conversation, alice: Dev, alice2: Dev, bob: Dev) -> None:
    _lose_key(conversation, alice2.device)
    request = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1).request
    assert _answer(alice, request)

    with capture_published_events() as published:
        assert not _answer(bob, request)

    assert WrappedKey.objects.filter(recipient_device=alice2.device).count() == 1
    assert published == []


def test_answer_refuses_outsiders_and_own_requests(conversation: Conversation, alice2: Dev) -> None:
    _lose_key(conversation, alice2.device)
    request = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1).request
    outsider = make_dev(user=UserFactory.create(username="carol"))

    with pytest.raises(KeyRequestNotFoundError):
        _answer(outsider, request)
    with pytest.raises(KeyRequestNotFoundError):
        _answer(alice2, request)
    assert not WrappedKey.objects.filter(recipient_device=alice2.device).exists()


def test_answer_refuses_a_request_of_a_revoked_device(conversation: Conversation, alice: Dev, alice2: Dev) -> None:
    _lose_key(conversation, alice2.device)
    request = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1).request
    Device.objects.filter(pk=alice2.device.pk).update(status=Device.Status.REVOKED)

    with pytest.raises(KeyRequestClosedError):
        _answer(alice, request)
    assert not WrappedKey.objects.filter(recipient_device=alice2.device).exists()


def test_open_list_shows_other_devices_requests_only(
    conversation: Conversation, alice: Dev, alice2: Dev, bob: Dev
) -> None:
    _lose_key(conversation, alice2.device)
    request = key_request_file(device=alice2.device, conversation_id=conversation.pk, epoch=1).request
    outsider = make_dev(user=UserFactory.create(username="carol"))

    with forbid_writes():
        assert [r.pk for r in key_request_list_open(device=bob.device)] == [request.pk]
        assert [r.pk for r in key_request_list_open(device=alice.device)] == [request.pk]
        assert key_request_list_open(device=alice2.device) == []
        assert key_request_list_open(device=outsider.device) == []

    _answer(bob, request)
    assert key_request_list_open(device=alice.device) == []
