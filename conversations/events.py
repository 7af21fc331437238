"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict

from accounts.models import User
from conversations.models import Conversation, KeyRequest


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


class KeyRequestFiledEvent(TypedDict):
    """A member device asks for an epoch's ChatKey: the other active member devices get a
    `key_request` frame and may answer by re-wrapping it (protocol.md 4.8, 6.2)."""

    type: Literal["key_request.filed"]
    key_request: dict[str, Any]  # the KeyRequest object of protocol.md 4.8


class KeyRequestServedEvent(TypedDict):
    """A key was re-wrapped for the requesting device: it gets a `key_available` frame."""

    type: Literal["key_request.served"]
    request_id: str
    conversation_id: str
    epoch: int


def _iso(value: datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def key_request_object(request: KeyRequest, *, epoch: int, username: str) -> dict[str, Any]:
    return {
        "request_id": str(request.pk),
        "conversation_id": str(request.conversation_id),
        "epoch": epoch,
        "username": username,
        "device_id": str(request.device_id),
        "status": "open" if request.served_at is None else "served",
        "created_at": _iso(request.created_at),
    }


def key_request_filed_event(request: KeyRequest, *, epoch: int, username: str) -> KeyRequestFiledEvent:
    return {"type": "key_request.filed", "key_request": key_request_object(request, epoch=epoch, username=username)}


def key_request_served_event(request: KeyRequest, *, epoch: int) -> KeyRequestServedEvent:
    return {
        "type": "key_request.served",
        "request_id": str(request.pk),
        "conversation_id": str(request.conversation_id),
        "epoch": epoch,
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
