"""Reads of the message log. Selectors never write."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from accounts.models import User
from conversations.models import Conversation, Membership
from devices.models import Device
from messaging.models import DeliveryCursor, Message
from messaging.wire import message_frame_json

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 500


@dataclass(frozen=True)
class HistoryPage:
    messages: list[Message]
    has_more: bool
    next_after: int  # the last seq returned, or `after` when the page is empty


def message_history_page(*, conversation: Conversation, after: int, limit: int) -> HistoryPage:
    """Envelopes with seq > after, ascending, at most `limit` (one query, on the unique index)."""
    rows = list(
        Message.objects.select_related("sender_device__user")
        .filter(conversation=conversation, seq__gt=after)
        .order_by("seq")[: limit + 1]  # one extra row tells whether there is more
    )
    messages = rows[:limit]
    return HistoryPage(
        messages=messages,
        has_more=len(rows) > limit,
        next_after=messages[-1].seq if messages else after,
    )


def message_get_by_client_id(*, sender_device: Device, client_message_id: bytes) -> Message | None:
    """The message a device sent under this idempotency key, if any."""
    return (
        Message.objects.select_related("sender_device__user")
        .filter(sender_device=sender_device, client_message_id=client_message_id)
        .first()
    )


@dataclass(frozen=True)
class ConversationPosition:
    """Where a device stands in one of its conversations when it connects."""

    conversation_id: uuid.UUID
    last_seq: int
    delivered_seq: int
    read_seq: int


def realtime_positions(*, device: Device) -> list[ConversationPosition]:
    """Every conversation of the device's account with its last seq and the device's cursors.

    Two queries whatever the history size: cost grows with the number of conversations only.
    """
    cursors = {
        conversation_id: (delivered, read)
        for conversation_id, delivered, read in DeliveryCursor.objects.filter(device=device).values_list(
            "conversation_id", "delivered_seq", "read_seq"
        )
    }
    return [
        ConversationPosition(conversation_id, last_seq, *cursors.get(conversation_id, (0, 0)))
        for conversation_id, last_seq in Membership.objects.filter(user_id=device.user_id).values_list(
            "conversation_id", "conversation__last_seq"
        )
    ]


def message_frames_after(*, conversation_id: uuid.UUID, after: int, limit: int) -> list[tuple[int, str]]:
    """`(seq, message frame text)` for seq > after, ascending, at most `limit` (catch-up, gaps).

    One query on the (conversation, seq) index: the same cost at any history size.
    """
    return [
        (message.seq, message_frame_json(message))
        for message in Message.objects.select_related("sender_device__user")
        .filter(conversation_id=conversation_id, seq__gt=after)
        .order_by("seq")[:limit]
    ]


def users_sharing_a_conversation(*, user: User, usernames: Sequence[str]) -> dict[str, int]:
    """Of `usernames`, those who share at least one conversation with `user` (name -> id).

    Presence and typing are visible only to them (protocol.md 6.6); `user` counts as sharing.
    """
    shared = Membership.objects.filter(
        user__username__in=list(usernames),
        conversation__memberships__user=user,
    ).values_list("user__username", "user_id")
    return dict(shared)
