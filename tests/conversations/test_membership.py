"""Adding, removing and leaving members (protocol.md 2.15, 4.3): atomic with their keys."""

from __future__ import annotations

import os
from typing import Any

import pytest

from accounts.errors import UserNotFoundError
from common.testing import PublishedEvent
from conversations.errors import (
    AlreadyMemberError,
    DirectConversationMembersFixedError,
    EpochConflictError,
    EpochRequiredError,
    HistoryKeysMismatchError,
    HistoryNotSharedError,
    MemberNotFoundError,
    MissingDevicesError,
)
from conversations.models import ChatKeyEpoch, Conversation, Membership, WrappedKey
from conversations.services import (
    HistoryKeyUpload,
    chat_key_epoch_upload,
    conversation_member_add,
    conversation_member_remove,
)
from tests.accounts.factories import UserFactory
from tests.builders import Dev, active_devices, epoch_upload, make_conversation, make_dev, manifest_upload, uploads_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def people() -> dict[str, Dev]:
    return {name: make_dev(user=UserFactory.create(username=name)) for name in ("alice", "bob", "carol")}


def _history_for(dev: Dev, epochs: int) -> list[HistoryKeyUpload]:
    return [
        HistoryKeyUpload(epoch=n, device_id=d.id, wrapped_key=os.urandom(80), signature=os.urandom(64))
        for n in range(1, epochs + 1)
        for d in active_devices(dev.user)
    ]


def _published(published: list[PublishedEvent]) -> list[tuple[list[str], dict[str, Any]]]:
    """Each event published, with the groups it went to: one publish records one entry per group,
    all holding the same event object."""
    events: list[tuple[list[str], dict[str, Any]]] = []
    for item in published:
        if events and events[-1][1] is item.event:
            events[-1][0].append(item.group)
        else:
            events.append(([item.group], item.event))
    return events


def test_add_with_history_stores_every_epoch_for_the_newcomer_and_tells_everyone(
    people: dict[str, Dev], django_capture_on_commit_callbacks: Any, published: list[PublishedEvent]
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    conversation = make_conversation(alice, bob.user)
    chat_key_epoch_upload(
        device=bob.device,
        conversation_id=conversation.pk,
        number=2,
        wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
        manifest=manifest_upload(),
    )

    with django_capture_on_commit_callbacks(execute=True):
        conversation_member_add(
            device=bob.device, conversation_id=conversation.pk, username="carol", history_keys=_history_for(carol, 2)
        )

    assert Membership.objects.filter(conversation=conversation, user=carol.user).exists()
    held = WrappedKey.objects.filter(recipient_device=carol.device).values_list("epoch__number", flat=True)
    assert sorted(held) == [1, 2]
    events = _published(published)
    assert [e["type"] for _, e in events] == ["conversation.joined", "conversation.members"]
    assert events[1][1] | {"conversation_id": ""} == {
        "type": "conversation.members",
        "conversation_id": "",
        "change": "added",
        "username": "carol",
        "by": "bob",
        "members": ["alice", "bob", "carol"],
        "current_epoch": 2,
    }
    assert len(events[1][0]) == 3  # every member device, the newcomer's included


def test_add_with_history_refuses_incomplete_keys_and_writes_nothing(people: dict[str, Dev]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    conversation = make_conversation(alice, bob.user)
    chat_key_epoch_upload(
        device=bob.device,
        conversation_id=conversation.pk,
        number=2,
        wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
        manifest=manifest_upload(),
    )

    with pytest.raises(HistoryKeysMismatchError) as caught:
        conversation_member_add(
            device=alice.device, conversation_id=conversation.pk, username="carol", history_keys=_history_for(carol, 1)
        )

    assert caught.value.extra == {"missing": 1, "unexpected": 0}
    assert not Membership.objects.filter(user=carol.user).exists()
    assert not WrappedKey.objects.filter(recipient_device=carol.device).exists()


def test_add_without_shared_history_needs_a_new_epoch_for_everyone_and_no_history(people: dict[str, Dev]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    conversation = make_conversation(alice, bob.user)
    Conversation.objects.filter(pk=conversation.pk).update(share_history=False)

    with pytest.raises(HistoryNotSharedError):
        conversation_member_add(
            device=alice.device, conversation_id=conversation.pk, username="carol", history_keys=_history_for(carol, 1)
        )
    with pytest.raises(EpochRequiredError):
        conversation_member_add(device=alice.device, conversation_id=conversation.pk, username="carol")
    with pytest.raises(MissingDevicesError):
        conversation_member_add(
            device=alice.device,
            conversation_id=conversation.pk,
            username="carol",
            epoch=epoch_upload(2, active_devices(alice.user, bob.user)),
        )
    conversation_member_add(
        device=alice.device,
        conversation_id=conversation.pk,
        username="carol",
        epoch=epoch_upload(2, active_devices(alice.user, bob.user, carol.user)),
    )

    held = WrappedKey.objects.filter(recipient_device=carol.device).values_list("epoch__number", flat=True)
    assert list(held) == [2]
    assert Conversation.objects.get(pk=conversation.pk).current_epoch == 2


def test_add_refuses_direct_conversations_members_and_unknown_users(people: dict[str, Dev]) -> None:
    alice, bob = people["alice"], people["bob"]
    direct = make_conversation(alice, bob.user, kind=Conversation.Kind.DIRECT)
    group = make_conversation(alice, bob.user)

    with pytest.raises(DirectConversationMembersFixedError):
        conversation_member_add(device=alice.device, conversation_id=direct.pk, username="carol")
    with pytest.raises(DirectConversationMembersFixedError):
        conversation_member_remove(device=alice.device, conversation_id=direct.pk, username="bob")
    with pytest.raises(AlreadyMemberError):
        conversation_member_add(device=alice.device, conversation_id=group.pk, username="bob")
    with pytest.raises(UserNotFoundError):
        conversation_member_add(device=alice.device, conversation_id=group.pk, username="nobody")


def test_remove_rotates_for_exactly_the_remaining_devices_atomically(
    people: dict[str, Dev], django_capture_on_commit_callbacks: Any, published: list[PublishedEvent]
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    conversation = make_conversation(alice, bob.user, carol.user)

    with pytest.raises(EpochRequiredError):
        conversation_member_remove(device=alice.device, conversation_id=conversation.pk, username="carol")
    with pytest.raises(MissingDevicesError):  # bob's device is missing
        conversation_member_remove(
            device=alice.device,
            conversation_id=conversation.pk,
            username="carol",
            epoch=epoch_upload(2, active_devices(alice.user)),
        )
    with pytest.raises(EpochConflictError):
        conversation_member_remove(
            device=alice.device,
            conversation_id=conversation.pk,
            username="carol",
            epoch=epoch_upload(3, active_devices(alice.user, bob.user)),
        )
    assert Membership.objects.filter(conversation=conversation).count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        conversation_member_remove(
            device=alice.device,
            conversation_id=conversation.pk,
            username="carol",
            epoch=epoch_upload(2, active_devices(alice.user, bob.user)),
        )

    assert not Membership.objects.filter(conversation=conversation, user=carol.user).exists()
    epoch = ChatKeyEpoch.objects.get(conversation=conversation, number=2)
    assert set(epoch.wrapped_keys.values_list("recipient_device_id", flat=True)) == {alice.device.id, bob.device.id}
    [(groups, event)] = _published(published)
    assert (event["change"], event["username"], event["members"]) == ("removed", "carol", ["alice", "bob"])
    assert len(groups) == 3  # carol's device is told too, and stops receiving the conversation
    with pytest.raises(MemberNotFoundError):
        conversation_member_remove(
            device=alice.device,
            conversation_id=conversation.pk,
            username="carol",
            epoch=epoch_upload(3, active_devices(alice.user, bob.user)),
        )


def test_a_member_may_leave_without_an_epoch(people: dict[str, Dev]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    conversation = make_conversation(alice, bob.user, carol.user)

    conversation_member_remove(device=carol.device, conversation_id=conversation.pk, username="carol")

    assert sorted(conversation.members.values_list("username", flat=True)) == ["alice", "bob"]
    assert Conversation.objects.get(pk=conversation.pk).current_epoch == 1
