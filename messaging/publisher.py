"""The one publisher of new messages: renders each once as its `message` frame and sends one
`conversation.messages` event per conversation to the channel layer (protocol.md 6.4).

The send service returns what it stored (`MessageStored`) and publishes nothing; its callers
hand that here once the batch has committed: REST through `messages_publish_on_commit`, the
realtime batcher (messaging/batching.py) through `messages_events` in its database thread and
`messages_publish` on the event loop, in commit order. A failed publish is logged and dropped:
the log is the source of truth, and receivers catch up from it (the sweeper, the next push).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.metrics import FANOUT_LATENCY
from common.realtime import conversation_group, group_send_all, publish_on_commit
from messaging.events import ConversationMessagesEvent, conversation_messages_event
from messaging.wire import message_frame_json

if TYPE_CHECKING:
    from messaging.services import MessageStored

logger = logging.getLogger(__name__)

GroupEvent = tuple[str, ConversationMessagesEvent]


def messages_events(stored: Sequence[MessageStored]) -> list[GroupEvent]:
    """One event per conversation, its new messages in seq order, each pre-rendered as the
    `message` frame (encoded once here, not once per receiving connection)."""
    if not stored:
        return []
    by_conversation: dict[uuid.UUID, list[tuple[int, str, str]]] = {}
    for item in stored:
        message = item.message
        by_conversation.setdefault(message.conversation_id, []).append(
            (message.seq, item.origin, message_frame_json(message))
        )
    stored_at = stored[0].message.created_at.timestamp()
    return [
        (conversation_group(pk), conversation_messages_event(pk, rows, stored_at=stored_at))
        for pk, rows in by_conversation.items()
    ]


def messages_publish_on_commit(stored: Sequence[MessageStored]) -> None:
    """From synchronous code (REST): publish after the current transaction commits (at once
    outside one)."""
    for group, event in messages_events(stored):
        publish_on_commit(group, event)


async def messages_publish(events: Sequence[GroupEvent]) -> None:
    """From the event loop, events rendered by `messages_events` after their batch committed."""
    for group, event in events:
        started = time.perf_counter()
        try:
            await group_send_all([group], dict(event))
        except Exception:  # the layer is down: receivers catch up from the database (6.4)
            logger.exception("realtime publish failed", extra={"fields": {"event_type": event["type"]}})
        else:
            FANOUT_LATENCY.observe(time.perf_counter() - started)
