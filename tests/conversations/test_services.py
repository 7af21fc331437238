from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from django.test import override_settings

from accounts.errors import UserNotFoundError
from conversations.errors import (
    ConversationIdTakenError,
    ConversationNotFoundError,
    ConversationTooManyMembersError,
    DirectConversationExistsError,
    DirectNeedsOnePeerError,
    EpochConflictError,
    MissingDevicesError,
    UnexpectedDevicesError,
    WrappedKeysDuplicateDeviceError,
)
from conversations.models import ChatKeyEpoch, Conversation, Membership, WrappedKey
from conversations.services import WrappedKeyUpload, chat_key_epoch_upload, conversation_create
from devices.models import Device
from tests.accounts.factories import UserFactory
from tests.builders import Dev, active_devices, make_conversation, make_dev, manifest_upload, uploads_for
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def _row_counts() -> dict[str, int]:
    return {
        "conversations": Conversation.objects.count(),
        "memberships": Membership.objects.count(),
        "epochs": ChatKeyEpoch.objects.count(),
        "wrapped_keys": WrappedKey.objects.count(),
    }


def _create(creator: Dev, members: list[str], uploads: list[WrappedKeyUpload], **kwargs: Any) -> Conversation:
    params: dict[str, Any] = {
        "device": creator.device,
        "conversation_id": uuid.uuid4(),
        "kind": Conversation.Kind.GROUP,
        "member_usernames": members,
        "epoch_number": 1,
        "wrapped_keys": uploads,
        "manifest": manifest_upload(),
    }
    params.update(kwargs)
    return conversation_create(**params)


@pytest.fixture
def alice() -> Dev:
    dev = make_dev(user=UserFactory.create(username="alice"))
    DeviceFactory.create(user=dev.user)  # a second active device
    return dev


@pytest.fixture
def bob() -> Dev:
    dev = make_dev(user=UserFactory.create(username="bob"))
    DeviceFactory.create(user=dev.user)
    DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    return dev


def test_create_writes_conversation_members_epoch_and_keys(alice: Dev, bob: Dev) -> None:
    devices = active_devices(alice.user, bob.user)
    uploads = uploads_for(devices)

    conversation = _create(alice, ["bob"], uploads)

    conversation.refresh_from_db()
    assert conversation.kind == "group"
    assert conversation.current_epoch == 1
    assert conversation.last_seq == 0
    assert conversation.created_by == alice.device
    assert set(conversation.members.values_list("username", flat=True)) == {"alice", "bob"}
    epoch = ChatKeyEpoch.objects.get(conversation=conversation)
    assert (epoch.number, epoch.created_by) == (1, alice.device)
    stored = {k.recipient_device_id: k for k in WrappedKey.objects.filter(epoch=epoch)}
    assert set(stored) == {d.id for d in devices}
    for upload in uploads:
        key = stored[upload.device_id]
        assert bytes(key.wrapped_key) == upload.wrapped_key
        assert bytes(key.signature) == upload.signature
        assert key.wrapping_device == alice.device


def test_creator_listed_among_members_is_not_a_duplicate(alice: Dev, bob: Dev) -> None:
    conversation = _create(alice, ["alice", "bob", "bob"], uploads_for(active_devices(alice.user, bob.user)))
    assert Membership.objects.filter(conversation=conversation).count() == 2


def test_group_of_one_is_allowed(alice: Dev) -> None:
    conversation = _create(alice, [], uploads_for(active_devices(alice.user)))
    assert list(conversation.members.values_list("username", flat=True)) == ["alice"]


def test_missing_device_of_the_creator_is_refused_and_nothing_written(alice: Dev, bob: Dev) -> None:
    creators_other = Device.objects.filter(user=alice.user).exclude(pk=alice.device.pk).get()
    devices = [d for d in active_devices(alice.user, bob.user) if d != creators_other]
    before = _row_counts()

    with pytest.raises(MissingDevicesError) as caught:
        _create(alice, ["bob"], uploads_for(devices))

    assert caught.value.status == 409
    assert caught.value.extra == {"missing_devices": [{"username": "alice", "device_id": str(creators_other.id)}]}
    assert _row_counts() == before


def test_missing_device_of_a_member_is_refused_and_nothing_written(alice: Dev, bob: Dev) -> None:
    bobs = active_devices(bob.user)
    before = _row_counts()

    with pytest.raises(MissingDevicesError) as caught:
        _create(alice, ["bob"], uploads_for(active_devices(alice.user)))

    assert caught.value.extra["missing_devices"] == sorted(
        ({"username": "bob", "device_id": str(d.id)} for d in bobs), key=lambda m: m["device_id"]
    )
    assert _row_counts() == before


@pytest.mark.parametrize("intruder", ["pending_member_device", "revoked_member_device", "stranger_device", "unknown"])
def test_unexpected_device_is_refused_and_nothing_written(alice: Dev, bob: Dev, intruder: str) -> None:
    extra_device_id = {
        "pending_member_device": lambda: Device.objects.get(user=bob.user, status=Device.Status.PENDING).id,
        "revoked_member_device": lambda: DeviceFactory.create(user=bob.user, status=Device.Status.REVOKED).id,
        "stranger_device": lambda: DeviceFactory.create().id,
        "unknown": uuid.uuid4,
    }[intruder]()
    uploads = uploads_for(active_devices(alice.user, bob.user))
    uploads.append(WrappedKeyUpload(extra_device_id, os.urandom(80), os.urandom(64)))
    before = _row_counts()

    with pytest.raises(UnexpectedDevicesError) as caught:
        _create(alice, ["bob"], uploads)

    assert caught.value.status == 409
    assert caught.value.extra == {"device_ids": [str(extra_device_id)]}
    assert _row_counts() == before


def test_duplicate_recipient_is_invalid_request(alice: Dev) -> None:
    uploads = uploads_for(active_devices(alice.user))
    with pytest.raises(WrappedKeysDuplicateDeviceError) as caught:
        _create(alice, [], [*uploads, uploads[0]])
    assert caught.value.code == "invalid_request"
    assert "wrapped_keys" in caught.value.extra["fields"]


def test_unknown_member_is_user_not_found_and_nothing_written(alice: Dev, bob: Dev) -> None:
    before = _row_counts()
    with pytest.raises(UserNotFoundError) as caught:
        _create(alice, ["bob", "zed", "carol"], uploads_for(active_devices(alice.user, bob.user)))
    assert caught.value.extra == {"usernames": ["carol", "zed"]}
    assert _row_counts() == before


def test_deactivated_member_is_user_not_found(alice: Dev, bob: Dev) -> None:
    bob.user.is_active = False
    bob.user.save()
    with pytest.raises(UserNotFoundError):
        _create(alice, ["bob"], uploads_for(active_devices(alice.user, bob.user)))


@pytest.mark.parametrize("members", [[], ["alice"], ["bob", "carol"]])
def test_direct_needs_exactly_one_peer(alice: Dev, bob: Dev, members: list[str]) -> None:
    UserFactory.create(username="carol")
    with pytest.raises(DirectNeedsOnePeerError):
        _create(alice, members, [], kind=Conversation.Kind.DIRECT)


def test_direct_conversation_is_unique_per_pair_in_either_order(alice: Dev, bob: Dev) -> None:
    both = active_devices(alice.user, bob.user)
    first = _create(alice, ["bob"], uploads_for(both), kind=Conversation.Kind.DIRECT)
    before = _row_counts()

    for creator, peer in ((alice, "bob"), (bob, "alice")):
        with pytest.raises(DirectConversationExistsError) as caught:
            _create(creator, [peer], uploads_for(both), kind=Conversation.Kind.DIRECT)
        assert caught.value.extra == {"conversation_id": str(first.pk)}
    assert _row_counts() == before
    # A group of the same pair is not a direct conversation.
    _create(alice, ["bob"], uploads_for(both))


def test_taken_conversation_id_is_refused(alice: Dev) -> None:
    conversation = make_conversation(alice)
    with pytest.raises(ConversationIdTakenError):
        _create(alice, [], uploads_for(active_devices(alice.user)), conversation_id=conversation.pk)


def test_first_epoch_must_be_1(alice: Dev) -> None:
    with pytest.raises(EpochConflictError) as caught:
        _create(alice, [], uploads_for(active_devices(alice.user)), epoch_number=2)
    assert caught.value.extra == {"current_epoch": 0}
    assert not Conversation.objects.exists()


@override_settings(E2EE_MAX_GROUP_MEMBERS=3)
def test_group_size_is_limited_creator_included(alice: Dev) -> None:
    names = [UserFactory.create().username for _ in range(3)]
    with pytest.raises(ConversationTooManyMembersError) as caught:
        _create(alice, names, [])
    assert caught.value.code == "invalid_request"
    assert list(caught.value.extra["fields"]) == ["members"]


def test_epoch_upload_starts_next_epoch(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    uploads = uploads_for(active_devices(alice.user, bob.user))

    epoch = chat_key_epoch_upload(
        device=bob.device, conversation_id=conversation.pk, number=2, wrapped_keys=uploads, manifest=manifest_upload()
    )

    conversation.refresh_from_db()
    assert conversation.current_epoch == 2
    assert (epoch.number, epoch.created_by) == (2, bob.device)
    assert WrappedKey.objects.filter(epoch=epoch, wrapping_device=bob.device).count() == len(uploads)


@pytest.mark.parametrize("number", [0, 1, 3, 100])
def test_epoch_upload_other_than_current_plus_one_is_conflict(alice: Dev, bob: Dev, number: int) -> None:
    conversation = make_conversation(alice, bob.user)
    before = _row_counts()
    with pytest.raises(EpochConflictError) as caught:
        chat_key_epoch_upload(
            device=alice.device,
            conversation_id=conversation.pk,
            number=number,
            wrapped_keys=uploads_for(active_devices(alice.user, bob.user)),
            manifest=manifest_upload(),
        )
    assert caught.value.extra == {"current_epoch": 1}
    assert _row_counts() == before


def test_epoch_upload_checks_coverage_including_devices_activated_since(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    newcomer = DeviceFactory.create(user=bob.user)  # bob vouched a new device after creation
    before = _row_counts()
    with pytest.raises(MissingDevicesError) as caught:
        chat_key_epoch_upload(
            device=alice.device,
            conversation_id=conversation.pk,
            number=2,
            wrapped_keys=uploads_for(d for d in active_devices(alice.user, bob.user) if d != newcomer),
            manifest=manifest_upload(),
        )
    assert caught.value.extra == {"missing_devices": [{"username": "bob", "device_id": str(newcomer.id)}]}
    assert _row_counts() == before
    conversation.refresh_from_db()
    assert conversation.current_epoch == 1


def test_epoch_upload_by_non_member_is_conversation_not_found(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice)
    with pytest.raises(ConversationNotFoundError):
        chat_key_epoch_upload(
            device=bob.device,
            conversation_id=conversation.pk,
            number=2,
            wrapped_keys=uploads_for(active_devices(alice.user)),
            manifest=manifest_upload(),
        )
