"""Writes on conversations and ChatKey epochs."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import UserNotFoundError
from accounts.locks import users_lock
from accounts.models import User
from common.realtime import device_group, publish_on_commit, publish_to_groups_on_commit
from conversations.errors import (
    AlreadyMemberError,
    ConversationIdTakenError,
    ConversationTooManyMembersError,
    DirectConversationExistsError,
    DirectConversationMembersFixedError,
    DirectNeedsOnePeerError,
    EpochConflictError,
    EpochNotFoundError,
    EpochRequiredError,
    HistoryKeysMismatchError,
    HistoryNotSharedError,
    KeyRequestClosedError,
    KeyRequestNotFoundError,
    LinkKeysDuplicateError,
    MemberNotFoundError,
    MissingDevicesError,
    UnexpectedDevicesError,
    WrappedKeysDuplicateDeviceError,
)
from conversations.events import (
    conversation_joined_event,
    conversation_members_event,
    key_request_filed_event,
    key_request_served_event,
)
from conversations.models import ChatKeyEpoch, Conversation, KeyRequest, Membership, WrappedKey
from conversations.selectors import access_conversation, conversation_active_device_ids, conversation_member_ids
from devices.errors import DeviceNotActiveError, DeviceNotFoundError, DeviceNotPendingError, LinkRequestNotFoundError
from devices.models import Device, LinkRequest
from devices.selectors import device_list_active_of_users


@dataclass(frozen=True)
class WrappedKeyUpload:
    """The epoch's ChatKey wrapped for one recipient device by the uploading device."""

    device_id: uuid.UUID
    wrapped_key: bytes
    signature: bytes


@dataclass(frozen=True)
class EpochManifestUpload:
    """The epoch's manifest and its creator's signature (protocol.md 2.18), stored opaquely."""

    manifest: bytes
    signature: bytes


def _direct_key(user_ids: Collection[int]) -> str:
    low, high = sorted(user_ids)
    return f"{low}:{high}"


def _wrapped_keys_check_coverage(*, member_ids: Collection[int], wrapped_keys: Sequence[WrappedKeyUpload]) -> None:
    """The recipients must be exactly the active devices of all members.

    Call inside the transaction that writes the keys, after `users_lock(member_ids)`: the lock
    keeps any of these accounts from activating a device before commit (accounts/locks.py).
    """
    uploaded = [key.device_id for key in wrapped_keys]
    if len(set(uploaded)) != len(uploaded):
        raise WrappedKeysDuplicateDeviceError()
    active = {device.id: device for device in device_list_active_of_users(user_ids=member_ids)}
    missing = active.keys() - set(uploaded)
    if missing:
        raise MissingDevicesError([(active[device_id].user.username, device_id) for device_id in missing])
    unexpected = set(uploaded) - active.keys()
    if unexpected:
        raise UnexpectedDevicesError(list(unexpected))


def _epoch_write(
    *,
    conversation: Conversation,
    number: int,
    device: Device,
    wrapped_keys: Sequence[WrappedKeyUpload],
    manifest: EpochManifestUpload,
) -> ChatKeyEpoch:
    epoch = ChatKeyEpoch.objects.create(
        conversation=conversation,
        number=number,
        created_by=device,
        manifest=manifest.manifest,
        manifest_signature=manifest.signature,
    )
    WrappedKey.objects.bulk_create(
        WrappedKey(
            epoch=epoch,
            recipient_device_id=key.device_id,
            wrapping_device=device,
            wrapped_key=key.wrapped_key,
            signature=key.signature,
        )
        for key in wrapped_keys
    )
    return epoch


def conversation_create(
    *,
    device: Device,
    conversation_id: uuid.UUID,
    kind: Conversation.Kind,
    member_usernames: Sequence[str],
    epoch_number: int,
    wrapped_keys: Sequence[WrappedKeyUpload],
    manifest: EpochManifestUpload,
    share_history: bool = True,
) -> Conversation:
    """Create a conversation of `device`'s account and the named users, with epoch 1.

    `wrapped_keys` must cover exactly the active devices of every member (creator included); on
    any refusal nothing is written.
    """
    creator = device.user
    # The creator is always a member and need not be listed.
    others = sorted(set(member_usernames) - {creator.username})
    if kind == Conversation.Kind.DIRECT and len(others) != 1:
        raise DirectNeedsOnePeerError()
    if 1 + len(others) > settings.E2EE_MAX_GROUP_MEMBERS:
        raise ConversationTooManyMembersError(settings.E2EE_MAX_GROUP_MEMBERS)
    if epoch_number != 1:  # a new conversation is at epoch 0: its first epoch is 1
        raise EpochConflictError(0)
    try:
        with transaction.atomic(durable=True):
            users = list(User.objects.filter(Q(pk=creator.pk) | Q(username__in=others, is_active=True)).order_by("pk"))
            unknown = set(others) - {user.username for user in users}
            if unknown:
                raise UserNotFoundError(sorted(unknown))
            member_ids = [user.pk for user in users]
            users_lock(user_ids=member_ids)
            if Conversation.objects.filter(pk=conversation_id).exists():
                raise ConversationIdTakenError()
            direct_key = _direct_key(member_ids) if kind == Conversation.Kind.DIRECT else None
            if direct_key is not None:
                existing = Conversation.objects.filter(direct_key=direct_key).values_list("pk", flat=True).first()
                if existing is not None:
                    raise DirectConversationExistsError(existing)
            _wrapped_keys_check_coverage(member_ids=member_ids, wrapped_keys=wrapped_keys)
            conversation = Conversation.objects.create(
                id=conversation_id,
                kind=kind,
                direct_key=direct_key,
                created_by=device,
                current_epoch=1,
                share_history=share_history,
            )
            Membership.objects.bulk_create(Membership(conversation=conversation, user=user) for user in users)
            _epoch_write(
                conversation=conversation, number=1, device=device, wrapped_keys=wrapped_keys, manifest=manifest
            )
            # Every device that received a wrapped key is exactly the set of member devices.
            publish_to_groups_on_commit(
                [device_group(upload.device_id) for upload in wrapped_keys],
                conversation_joined_event(conversation, users),
            )
    except IntegrityError:
        # Creators with no member in common do not share a user lock; if they race for the
        # same conversation id, the primary key catches it.
        if Conversation.objects.filter(pk=conversation_id).exists():
            raise ConversationIdTakenError() from None
        raise
    return conversation


def chat_key_epoch_upload(
    *,
    device: Device,
    conversation_id: uuid.UUID,
    number: int,
    wrapped_keys: Sequence[WrappedKeyUpload],
    manifest: EpochManifestUpload,
) -> ChatKeyEpoch:
    """Start epoch `number` (= current + 1) of a conversation `device`'s account belongs to."""
    with transaction.atomic(durable=True):
        conversation = access_conversation(user=device.user, conversation_id=conversation_id)
        member_ids = conversation_member_ids(conversation_id=conversation.pk)
        # Lock order: users, then the conversation (accounts/locks.py). The conversation lock
        # serialises epoch uploads with each other and with message sends (stale_epoch).
        users_lock(user_ids=member_ids)
        locked = Conversation.objects.select_for_update().only("id", "current_epoch").get(pk=conversation.pk)
        if number != locked.current_epoch + 1:
            raise EpochConflictError(locked.current_epoch)
        _wrapped_keys_check_coverage(member_ids=member_ids, wrapped_keys=wrapped_keys)
        epoch = _epoch_write(
            conversation=locked, number=number, device=device, wrapped_keys=wrapped_keys, manifest=manifest
        )
        Conversation.objects.filter(pk=locked.pk).update(current_epoch=number)
    return epoch


def memberships_remove_user(*, user_id: int) -> int:
    """Building block (inside the caller's transaction): remove the account from every
    conversation it belongs to; the conversations and their logs stay. Returns the count."""
    deleted, _ = Membership.objects.filter(user_id=user_id).delete()
    return deleted


def wrapped_keys_delete_for_devices(*, device_ids: Collection[uuid.UUID]) -> int:
    """Building block: delete the ChatKeys wrapped *for* these devices (useless once they are
    gone). Keys they wrapped for other devices stay: those are the other devices' copies."""
    deleted, _ = WrappedKey.objects.filter(recipient_device_id__in=list(device_ids)).delete()
    return deleted


@dataclass(frozen=True)
class LinkWrappedKeyUpload:
    """One epoch's ChatKey wrapped for a device being linked."""

    conversation_id: uuid.UUID
    epoch: int
    wrapped_key: bytes
    signature: bytes


def link_keys_upload(*, uploader: Device, device_id: uuid.UUID, keys: Sequence[LinkWrappedKeyUpload]) -> int:
    """An active device uploads ChatKeys it wrapped for a pending device of its account that has
    a live link request (protocol.md 4.7), for epochs of conversations the account belongs to.
    Idempotent: a key already stored for that epoch and device is left as is. Returns how many
    keys were stored."""
    pairs = [(key.conversation_id, key.epoch) for key in keys]
    if len(set(pairs)) != len(pairs):
        raise LinkKeysDuplicateError()
    with transaction.atomic(durable=True):
        # The same serialisation point as the approval, which checks that no key is missing.
        users_lock(user_ids=[uploader.user_id])
        if not Device.objects.filter(pk=uploader.pk, status=Device.Status.ACTIVE).exists():
            raise DeviceNotActiveError()
        target = Device.objects.filter(pk=device_id, user_id=uploader.user_id).first()
        if target is None:
            raise DeviceNotFoundError()
        if target.status != Device.Status.PENDING:
            raise DeviceNotPendingError()
        if not target.link_requests.filter(status=LinkRequest.Status.WAITING, expires_at__gt=timezone.now()).exists():
            raise LinkRequestNotFoundError()
        epochs = {
            (conversation_id, number): pk
            for pk, conversation_id, number in ChatKeyEpoch.objects.filter(
                conversation__memberships__user_id=uploader.user_id,
                conversation_id__in={pair[0] for pair in pairs},
                number__in={pair[1] for pair in pairs},
            ).values_list("pk", "conversation_id", "number")
        }
        for conversation_id, number in pairs:
            if (conversation_id, number) not in epochs:
                raise EpochNotFoundError(conversation_id, number)
        held = set(
            WrappedKey.objects.filter(recipient_device=target, epoch_id__in=epochs.values()).values_list(
                "epoch_id", flat=True
            )
        )
        new = [key for key in keys if epochs[(key.conversation_id, key.epoch)] not in held]
        WrappedKey.objects.bulk_create(
            WrappedKey(
                epoch_id=epochs[(key.conversation_id, key.epoch)],
                recipient_device=target,
                wrapping_device=uploader,
                wrapped_key=key.wrapped_key,
                signature=key.signature,
            )
            for key in new
        )
    return len(new)


# -- key requests: missing keys heal themselves (protocol.md 4.8) --------------------------------


@dataclass(frozen=True)
class KeyRequestFiled:
    request: KeyRequest
    created: bool
    epoch: int


def key_request_file(
    *, device: Device, conversation_id: uuid.UUID, epoch: int, refuse_held: bool = False
) -> KeyRequestFiled:
    """`device` (active, of a member) lacks the ChatKey of `epoch`: record the request, or find
    the one it filed before, and announce it after commit to every other active device of every
    member, who may answer by re-wrapping the key (`key_request_answer`). Idempotent per (epoch,
    device); filing again announces it again (the client's retry). A request whose key the device
    already holds is served at once and announced to nobody, unless `refuse_held`: the device
    found that key does not verify (a garbage answer, a row the server made up), so it is deleted
    and the request opened again; only the device's own key of that epoch is touched."""
    with transaction.atomic(durable=True):
        conversation = access_conversation(user=device.user, conversation_id=conversation_id)
        epoch_row = ChatKeyEpoch.objects.filter(conversation=conversation, number=epoch).first()
        if epoch_row is None:
            raise EpochNotFoundError(conversation_id, epoch)
        now = timezone.now()
        request, created = KeyRequest.objects.get_or_create(
            epoch=epoch_row,
            device=device,
            defaults={"id": uuid.uuid4(), "conversation": conversation, "created_at": now, "last_asked_at": now},
        )
        if refuse_held:
            WrappedKey.objects.filter(epoch=epoch_row, recipient_device=device).delete()
            if request.served_at is not None:
                request.served_at, request.served_by = None, None
                request.save(update_fields=["served_at", "served_by"])
        if request.served_at is not None:
            return KeyRequestFiled(request=request, created=created, epoch=epoch)
        held = WrappedKey.objects.filter(epoch=epoch_row, recipient_device=device).first()
        if held is not None:
            request.served_at, request.served_by_id = now, held.wrapping_device_id
            request.save(update_fields=["served_at", "served_by"])
            return KeyRequestFiled(request=request, created=created, epoch=epoch)
        if not created:
            request.last_asked_at = now
            request.save(update_fields=["last_asked_at"])
        answerers = [pk for pk in conversation_active_device_ids(conversation_id=conversation.pk) if pk != device.pk]
        publish_to_groups_on_commit(
            [device_group(pk) for pk in answerers],
            key_request_filed_event(request, epoch=epoch, username=device.user.username),
        )
    return KeyRequestFiled(request=request, created=created, epoch=epoch)


def key_request_answer(*, device: Device, request_id: uuid.UUID, wrapped_key: bytes, signature: bytes) -> bool:
    """An active device of a member answers another device's open key request with the epoch's
    ChatKey wrapped for the requester (protocol.md 2.2: wrapped and signed by `device`). Stored
    like any wrapped key; the requester hears `key_request.served` after commit. Returns False
    (storing nothing) if the request was served already. The server cannot check that the key is
    the right one: the requester verifies the wrapper's signature and the key opens messages."""
    with transaction.atomic(durable=True):
        request = (
            KeyRequest.objects.select_for_update(of=("self",))
            .filter(pk=request_id, conversation__memberships__user_id=device.user_id)
            .exclude(device_id=device.pk)
            .first()
        )
        if request is None:
            raise KeyRequestNotFoundError()
        requester_ok = Device.objects.filter(
            pk=request.device_id,
            status=Device.Status.ACTIVE,
            user__memberships__conversation_id=request.conversation_id,
        ).exists()
        if not requester_ok:
            raise KeyRequestClosedError()
        if (
            request.served_at is not None
            or WrappedKey.objects.filter(epoch_id=request.epoch_id, recipient_device_id=request.device_id).exists()
        ):
            if request.served_at is None:
                request.served_at = timezone.now()
                request.save(update_fields=["served_at"])
            return False
        WrappedKey.objects.create(
            epoch_id=request.epoch_id,
            recipient_device_id=request.device_id,
            wrapping_device=device,
            wrapped_key=wrapped_key,
            signature=signature,
        )
        request.served_at, request.served_by = timezone.now(), device
        request.save(update_fields=["served_at", "served_by"])
        number = ChatKeyEpoch.objects.values_list("number", flat=True).get(pk=request.epoch_id)
        publish_on_commit(device_group(request.device_id), key_request_served_event(request, epoch=number))
    return True


# -- membership changes (protocol.md 2.15, 4.3) ---------------------------------------------------


@dataclass(frozen=True)
class EpochUpload:
    number: int
    wrapped_keys: Sequence[WrappedKeyUpload]
    manifest: EpochManifestUpload


@dataclass(frozen=True)
class HistoryKeyUpload:
    """An earlier epoch's ChatKey wrapped for one device of a member being added."""

    epoch: int
    device_id: uuid.UUID
    wrapped_key: bytes
    signature: bytes


def _membership_locked(
    *, device: Device, conversation_id: uuid.UUID, extra_user_ids: Sequence[int] = ()
) -> tuple[Conversation, list[int]]:
    """Inside the caller's transaction: the conversation (locked) and its member ids, after
    locking the members' (and `extra_user_ids`') user rows. Lock order: users, then conversation."""
    conversation = access_conversation(user=device.user, conversation_id=conversation_id)
    if conversation.kind == Conversation.Kind.DIRECT:
        raise DirectConversationMembersFixedError()
    member_ids = conversation_member_ids(conversation_id=conversation.pk)
    users_lock(user_ids=sorted({*member_ids, *extra_user_ids}))
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    # Re-read under the locks: a concurrent change may have committed meanwhile.
    return locked, conversation_member_ids(conversation_id=conversation.pk)


def _next_epoch_write(
    *, conversation: Conversation, device: Device, member_ids: Sequence[int], epoch: EpochUpload
) -> None:
    if epoch.number != conversation.current_epoch + 1:
        raise EpochConflictError(conversation.current_epoch)
    _wrapped_keys_check_coverage(member_ids=member_ids, wrapped_keys=epoch.wrapped_keys)
    _epoch_write(
        conversation=conversation,
        number=epoch.number,
        device=device,
        wrapped_keys=epoch.wrapped_keys,
        manifest=epoch.manifest,
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_epoch=epoch.number)
    conversation.current_epoch = epoch.number


def _member_devices_groups(member_ids: Collection[int]) -> list[str]:
    return [device_group(d.id) for d in device_list_active_of_users(user_ids=member_ids)]


def conversation_member_add(
    *,
    device: Device,
    conversation_id: uuid.UUID,
    username: str,
    history_keys: Sequence[HistoryKeyUpload] = (),
    epoch: EpochUpload | None = None,
) -> Conversation:
    """A member adds a user to a group conversation. With `share_history`, `history_keys` must
    hold every epoch's ChatKey (1 .. current) wrapped for every active device of the newcomer; without
    it, the change carries the next epoch wrapped for every member's active devices, newcomer
    included, and no earlier key (so the newcomer reads from its join on). Atomic."""
    with transaction.atomic(durable=True):
        newcomer = User.objects.filter(username=username, is_active=True).first()
        if newcomer is None:
            raise UserNotFoundError([username])
        conversation, member_ids = _membership_locked(
            device=device, conversation_id=conversation_id, extra_user_ids=[newcomer.pk]
        )
        if newcomer.pk in member_ids:
            raise AlreadyMemberError()
        if len(member_ids) + 1 > settings.E2EE_MAX_GROUP_MEMBERS:
            raise ConversationTooManyMembersError(settings.E2EE_MAX_GROUP_MEMBERS)
        after = [*member_ids, newcomer.pk]
        if conversation.share_history:
            newcomer_devices = {d.id for d in device_list_active_of_users(user_ids=[newcomer.pk])}
            expected = {(n, d) for n in range(1, conversation.current_epoch + 1) for d in newcomer_devices}
            uploaded = [(key.epoch, key.device_id) for key in history_keys]
            if len(set(uploaded)) != len(uploaded):
                raise WrappedKeysDuplicateDeviceError()
            if set(uploaded) != expected:
                raise HistoryKeysMismatchError(len(expected - set(uploaded)), len(set(uploaded) - expected))
        elif history_keys:
            raise HistoryNotSharedError()
        elif epoch is None:
            raise EpochRequiredError()
        Membership.objects.create(conversation=conversation, user=newcomer)
        if history_keys:
            epochs = dict(ChatKeyEpoch.objects.filter(conversation=conversation).values_list("number", "pk"))
            WrappedKey.objects.bulk_create(
                WrappedKey(
                    epoch_id=epochs[key.epoch],
                    recipient_device_id=key.device_id,
                    wrapping_device=device,
                    wrapped_key=key.wrapped_key,
                    signature=key.signature,
                )
                for key in history_keys
            )
        if epoch is not None:
            _next_epoch_write(conversation=conversation, device=device, member_ids=after, epoch=epoch)
        users = list(User.objects.filter(pk__in=after).order_by("pk"))
        publish_to_groups_on_commit(
            _member_devices_groups([newcomer.pk]), conversation_joined_event(conversation, users)
        )
        publish_to_groups_on_commit(
            _member_devices_groups(after),
            conversation_members_event(
                conversation=conversation,
                change="added",
                username=newcomer.username,
                by=device.user.username,
                members=[user.username for user in users],
            ),
        )
    return conversation


def conversation_member_remove(
    *, device: Device, conversation_id: uuid.UUID, username: str, epoch: EpochUpload | None = None
) -> Conversation:
    """A member removes a member of a group conversation, or leaves it (`username` is its own).
    Removing another member must carry the next epoch wrapped for exactly the remaining members'
    active devices (remove + rotate, atomic); leaving may come without one (the server cannot rotate
    for the one leaving: the remaining members' clients rotate before their next send, 2.14)."""
    with transaction.atomic(durable=True):
        conversation, member_ids = _membership_locked(device=device, conversation_id=conversation_id)
        target = User.objects.filter(username=username, pk__in=member_ids).first()
        if target is None:
            raise MemberNotFoundError()
        leaving = target.pk == device.user_id
        if epoch is None and not leaving:
            raise EpochRequiredError()
        remaining = [pk for pk in member_ids if pk != target.pk]
        Membership.objects.filter(conversation=conversation, user=target).delete()
        if epoch is not None:
            _next_epoch_write(conversation=conversation, device=device, member_ids=remaining, epoch=epoch)
        names = sorted(User.objects.filter(pk__in=remaining).values_list("username", flat=True))
        publish_to_groups_on_commit(
            _member_devices_groups(member_ids),
            conversation_members_event(
                conversation=conversation,
                change="left" if leaving else "removed",
                username=target.username,
                by=device.user.username,
                members=names,
            ),
        )
    return conversation
