"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from accounts.models import User
from conversations.models import Conversation


class ConversationJoinedEvent(TypedDict):
    """This device's account joined a conversation: connected sockets subscribe to it and tell
    the client with a `conversation` frame (protocol.md 6.2)."""

    type: Literal["conversation.joined"]
    conversation: dict[str, Any]  # the Conversation object of protocol.md 3.2


def conversation_joined_event(conversation: Conversation, members: Sequence[User]) -> ConversationJoinedEvent:
    created_at = conversation.created_at.isoformat()
    return {
        "type": "conversation.joined",
        "conversation": {
            "conversation_id": str(conversation.pk),
            "kind": str(conversation.kind),
            "members": sorted(user.username for user in members),
            "current_epoch": conversation.current_epoch,
            "last_seq": conversation.last_seq,
            "share_history": conversation.share_history,
            "created_at": created_at[:-6] + "Z" if created_at.endswith("+00:00") else created_at,
        },
    }


class ConversationMembersEvent(TypedDict):
    """A member was added, removed or left: every device of the members before and after the
    change is told with a `conversation_members` frame (protocol.md 6.2); a device whose account
    left stops receiving the conversation's messages."""

    type: Literal["conversation.members"]
    conversation_id: str
    change: Literal["added", "removed", "left"]
    username: str  # the member added, removed or leaving
    by: str  # the account that made the change
    members: list[str]  # after the change
    current_epoch: int


def conversation_members_event(
    *,
    conversation: Conversation,
    change: Literal["added", "removed", "left"],
    username: str,
    by: str,
    members: Sequence[str],
) -> ConversationMembersEvent:
    return {
        "type": "conversation.members",
        "conversation_id": str(conversation.pk),
        "change": change,
        "username": username,
        "by": by,
        "members": sorted(members),
        "current_epoch": conversation.current_epoch,
    }
