"""Typed payloads of the realtime events this app publishes.

Channels dispatches an event's `type` (dots become underscores) to the consumer method of that
name: "conversation.messages" reaches `RealtimeConsumer.conversation_messages`.
"""

from __future__ import annotations

import uuid
from typing import Literal, TypedDict

from messaging.wire import receipt_frame


class ConversationMessagesEvent(TypedDict):
    """New messages of one conversation, published to `conv.<id hex>` after they committed.

    `messages` holds `[seq, origin, frame]` in seq order: `origin` is the channel name of the
    connection that sent it ("" for REST), `frame` the ready-to-send `message` frame text.
    The channel layer may drop this; the database still has the messages (protocol.md 6.4).
    """

    type: Literal["conversation.messages"]
    conversation_id: str
    messages: list[tuple[int, str, str]]
    stored_at: float  # when they were stored (Unix time), for the delivery-latency metric


def conversation_messages_event(
    conversation_id: uuid.UUID, rows: list[tuple[int, str, str]], *, stored_at: float
) -> ConversationMessagesEvent:
    return {
        "type": "conversation.messages",
        "conversation_id": str(conversation_id),
        "messages": rows,
        "stored_at": stored_at,
    }


class ConversationReceiptsEvent(TypedDict):
    """Cursor moves of member devices (protocol.md 6.5), batched per flush. `frame` is the
    ready-to-send `receipt` frame text, encoded once by the publisher, not once per receiver."""

    type: Literal["conversation.receipts"]
    conversation_id: str
    frame: str


def conversation_receipts_event(
    conversation_id: uuid.UUID, receipts: list[dict[str, object]]
) -> ConversationReceiptsEvent:
    return {
        "type": "conversation.receipts",
        "conversation_id": str(conversation_id),
        "frame": receipt_frame(conversation_id, receipts),
    }
