from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from common.testing import forbid_writes
from conversations.errors import ConversationNotFoundError
from conversations.models import Conversation
from conversations.selectors import access_conversation, conversation_get, conversation_list, wrapped_key_list
from conversations.services import chat_key_epoch_upload
from tests.accounts.factories import UserFactory
from tests.builders import active_devices, make_conversation, make_dev, manifest_upload, uploads_for
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_conversation_list_is_newest_first_with_members_in_two_queries(django_assert_num_queries: Any) -> None:
    alice = make_dev(user=UserFactory.create(username="alice"))
    others = [make_dev(user=UserFactory.create(username=f"member{i}")).user for i in range(3)]
    conversations = [make_conversation(alice, *others[: i + 1]) for i in range(3)]
    make_conversation(make_dev())  # someone else's
    base = timezone.now()
    for age, conversation in enumerate(conversations):
        Conversation.objects.filter(pk=conversation.pk).update(created_at=base - timedelta(hours=age))

    with forbid_writes(), django_assert_num_queries(2):
        listed = conversation_list(user=alice.user)
        members = [[u.username for u in c.members.all()] for c in listed]

    assert [c.pk for c in listed] == [c.pk for c in conversations]
    assert members == [
        ["alice", "member0"],
        ["alice", "member0", "member1"],
        ["alice", "member0", "member1", "member2"],
    ]


def test_access_is_denied_to_non_members_like_an_unknown_id() -> None:
    alice, mallory = make_dev(), make_dev()
    conversation = make_conversation(alice)
    for conversation_id in (conversation.pk, uuid.uuid4()):
        with pytest.raises(ConversationNotFoundError):
            access_conversation(user=mallory.user, conversation_id=conversation_id)
        with pytest.raises(ConversationNotFoundError):
            conversation_get(user=mallory.user, conversation_id=conversation_id)
    assert access_conversation(user=alice.user, conversation_id=conversation.pk) == conversation


def test_a_device_gets_only_its_own_wrapped_keys_by_epoch(django_assert_num_queries: Any) -> None:
    alice = make_dev()
    phone = make_dev(user=alice.user)
    bob = make_dev()
    conversation = make_conversation(alice, bob.user)
    chat_key_epoch_upload(
        device=bob.device,
        conversation_id=conversation.pk,
        number=2,
        wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
        manifest=manifest_upload(),
    )

    with forbid_writes(), django_assert_num_queries(1):
        laptop_keys = wrapped_key_list(device=alice.device, conversation=conversation)
        wrapped_by = [(k.epoch.number, k.wrapping_device.user.username) for k in laptop_keys]
    phone_keys = wrapped_key_list(device=phone.device, conversation=conversation)

    assert wrapped_by == [(1, alice.user.username), (2, bob.user.username)]
    assert {k.recipient_device_id for k in laptop_keys} == {alice.device.id}
    assert {k.recipient_device_id for k in phone_keys} == {phone.device.id}
    # Same user, same epochs, different bytes: each device has its own wrapping.
    assert {bytes(k.wrapped_key) for k in laptop_keys}.isdisjoint({bytes(k.wrapped_key) for k in phone_keys})


def test_a_device_added_after_an_epoch_has_no_key_for_it() -> None:
    alice = make_dev()
    conversation = make_conversation(alice)
    later = DeviceFactory.create(user=alice.user)
    assert wrapped_key_list(device=later, conversation=conversation) == []
