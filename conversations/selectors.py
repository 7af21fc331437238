"""Reads of conversations and wrapped keys. Selectors never write.

Access rule: a conversation exists for a user only if the user is a member; anyone else gets
`conversation_not_found`, exactly like an unknown id (protocol.md 3.1: 404, not 403).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from accounts.models import User
from conversations.errors import ConversationNotFoundError, EpochNotFoundError
from conversations.models import ChatKeyEpoch, Conversation, KeyRequest, Membership, WrappedKey
from devices.models import Device


def _visible_to(user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(memberships__user=user)


def _with_members(conversations: QuerySet[Conversation]) -> QuerySet[Conversation]:
    # One extra query for all members of all conversations, usernames in order.
    return conversations.prefetch_related(
        Prefetch("members", queryset=User.objects.only("id", "username").order_by("username"))
    )


def access_conversation(*, user: User, conversation_id: uuid.UUID) -> Conversation:
    """The conversation if `user` is a member, else `ConversationNotFoundError` (one query)."""
    conversation = _visible_to(user).filter(pk=conversation_id).first()
    if conversation is None:
        raise ConversationNotFoundError()
    return conversation


def conversation_get(*, user: User, conversation_id: uuid.UUID) -> Conversation:
    """Like `access_conversation`, with `members` prefetched for output."""
    conversation = _with_members(_visible_to(user).filter(pk=conversation_id)).first()
    if conversation is None:
        raise ConversationNotFoundError()
    return conversation


def conversation_list(*, user: User) -> list[Conversation]:
    """The user's conversations, newest first, members prefetched (two queries in all)."""
    return list(_with_members(_visible_to(user).order_by("-created_at", "-id")))


def conversation_member_ids(*, conversation_id: uuid.UUID) -> list[int]:
    return list(
        Membership.objects.filter(conversation_id=conversation_id).order_by("user_id").values_list("user_id", flat=True)
    )


def conversation_active_device_ids(*, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    """Every active device of every member: the recipients of a realtime push."""
    return list(
        Device.objects.filter(user__memberships__conversation_id=conversation_id, status=Device.Status.ACTIVE)
        .order_by("id")
        .values_list("id", flat=True)
    )


def wrapped_key_list(*, device: Device, conversation: Conversation) -> list[WrappedKey]:
    """This device's own wrapped keys in the conversation, by epoch. There is deliberately no
    way to read another device's keys."""
    return list(
        WrappedKey.objects.select_related("epoch__created_by__user", "wrapping_device__user")
        .filter(recipient_device=device, epoch__conversation=conversation)
        .order_by("epoch__number")
    )


def conversation_last_seqs(*, conversation_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The newest seq of each conversation (primary-key lookups, in chunks of 1,000)."""
    ids = list(conversation_ids)
    found: dict[uuid.UUID, int] = {}
    for start in range(0, len(ids), 1000):
        found.update(Conversation.objects.filter(pk__in=ids[start : start + 1000]).values_list("pk", "last_seq"))
    return found


def _epochs_missing_for(device: Device) -> QuerySet[ChatKeyEpoch]:
    """Epochs of the conversations of `device`'s account that hold no key for `device`."""
    return ChatKeyEpoch.objects.filter(conversation__memberships__user_id=device.user_id).exclude(
        pk__in=WrappedKey.objects.filter(recipient_device=device).values("epoch_id")
    )


def link_missing_epochs(*, device: Device, after: int = 0, limit: int = 200) -> list[ChatKeyEpoch]:
    """A page of the epochs a device being linked still lacks a wrapped key for, in a stable
    order (`after` is the previous page's last `pk`: a cursor, opaque to clients)."""
    return list(
        _epochs_missing_for(device).filter(pk__gt=after).order_by("pk").only("pk", "conversation_id", "number")[:limit]
    )


def link_missing_epoch_count(*, device: Device) -> int:
    return _epochs_missing_for(device).count()


def _requester_still_member() -> Exists:
    return Exists(
        Membership.objects.filter(conversation_id=OuterRef("conversation_id"), user_id=OuterRef("device__user_id"))
    )


def key_request_list_open(*, device: Device, limit: int = 200) -> list[KeyRequest]:
    """Open key requests this device may answer (protocol.md 4.8): in conversations of its
    account, filed by another active device of a member that is still a member, oldest first.
    Whether to answer is the client's decision (trust in the requesting device and account)."""
    return list(
        KeyRequest.objects.filter(
            served_at__isnull=True,
            conversation__memberships__user_id=device.user_id,
            device__status=Device.Status.ACTIVE,
        )
        .filter(_requester_still_member())
        .exclude(device_id=device.pk)
        .select_related("epoch", "device__user")
        .order_by("created_at", "id")[:limit]
    )


def chat_key_epoch_get(*, conversation: Conversation, number: int) -> ChatKeyEpoch:
    """One epoch of the conversation with its wrapped keys' recipients (device and account)
    prefetched: who holds its ChatKey, never the keys themselves (two queries)."""
    epoch = (
        ChatKeyEpoch.objects.filter(conversation=conversation, number=number)
        .select_related("created_by__user")
        .prefetch_related(
            Prefetch(
                "wrapped_keys",
                queryset=WrappedKey.objects.select_related("recipient_device__user")
                .only("epoch_id", "recipient_device__id", "recipient_device__user__username")
                .order_by("recipient_device_id"),
            )
        )
        .first()
    )
    if epoch is None:
        raise EpochNotFoundError(conversation.pk, number)
    return epoch
