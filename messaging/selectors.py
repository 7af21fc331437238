"""Reads of the message log. Selectors never write."""

from __future__ import annotations

from dataclasses import dataclass

from conversations.models import Conversation
from devices.models import Device
from messaging.models import Message

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
