"""Every frame the realtime gateway sends (protocol.md 6.2), and the JSON of stored messages.

One function per server-to-client frame type, each returning the text sent on the socket; the
gateway builds no frame anywhere else, and tests/messaging/test_wire.py holds every one of them
to the SDK's parser (client/frames.py). Members come in a fixed order, so the bytes on the wire
are stable for every client.

`EnvelopeSerializer` (DRF) is the reference encoder of the Envelope object (protocol.md 3.2);
`envelope_dict` produces the same JSON an order of magnitude faster, and a test holds the two
equal. Each stored message is encoded once, not once per receiving connection.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from common.errors import ApiError
from messaging.models import Message


def _b64(value: bytes | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


def iso_timestamp(value: dt.datetime) -> str:
    # DRF's DateTimeField output for an aware UTC datetime: ISO 8601 with "Z".
    text = value.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def envelope_dict(message: Message) -> dict[str, Any]:
    """The Envelope object; needs `sender_device.user` loaded (no query)."""
    return {
        "seq": message.seq,
        "conversation_id": str(message.conversation_id),
        "version": message.version,
        "epoch": message.epoch,
        "sender_device_id": str(message.sender_device_id),
        "sender_username": message.sender_device.user.username,
        "client_message_id": _b64(message.client_message_id),
        "nonce": _b64(message.nonce),
        "ciphertext": _b64(message.ciphertext),
        "signature": _b64(message.signature),
        "device_lists": _b64(message.device_lists),
        "created_at": iso_timestamp(message.created_at),
    }


def frame_json(frame: dict[str, Any]) -> str:
    """A realtime frame as the text sent on the socket: compact, ASCII-only JSON."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=True)


def message_frame_json(message: Message) -> str:
    """The realtime `message` frame (protocol.md 6.2) as the text sent on the socket."""
    return frame_json(
        {"type": "message", "conversation_id": str(message.conversation_id), "envelope": envelope_dict(message)}
    )


CAUGHT_UP_FRAME = '{"type":"caught_up"}'


def welcome_frame(*, version: int, device_id: uuid.UUID, username: str, heartbeat_s: int) -> str:
    return frame_json(
        {"type": "welcome", "v": version, "device_id": str(device_id), "username": username, "heartbeat_s": heartbeat_s}
    )


def sent_frame(*, frame_id: str, message: Message, client_message_id_b64: str, created: bool) -> str:
    """The answer to a `send`: `client_message_id` echoed as the client sent it."""
    return frame_json(
        {
            "type": "sent",
            "id": frame_id,
            "conversation_id": str(message.conversation_id),
            "seq": message.seq,
            "client_message_id": client_message_id_b64,
            "created": created,
            "created_at": iso_timestamp(message.created_at),
        }
    )


def fetched_frame(*, frame_id: str, conversation_id: uuid.UUID, next_after: int, has_more: bool) -> str:
    return frame_json(
        {
            "type": "fetched",
            "id": frame_id,
            "conversation_id": str(conversation_id),
            "next_after": next_after,
            "has_more": has_more,
        }
    )


def receipt_frame(conversation_id: uuid.UUID, receipts: list[dict[str, object]]) -> str:
    return frame_json({"type": "receipt", "conversation_id": str(conversation_id), "receipts": receipts})


def typing_frame(*, conversation_id: str, username: str, device_id: str, state: str, expires_in_ms: int) -> str:
    return frame_json(
        {
            "type": "typing",
            "conversation_id": conversation_id,
            "username": username,
            "device_id": device_id,
            "state": state,
            "expires_in_ms": expires_in_ms,
        }
    )


def presence_frame(users: dict[str, bool], frame_id: str | None = None) -> str:
    """Who is online: an answer to a query (with its `id`) or one user's change (without)."""
    frame: dict[str, Any] = {"type": "presence"}
    if frame_id is not None:
        frame["id"] = frame_id
    frame["users"] = {name: {"online": online} for name, online in users.items()}
    return frame_json(frame)


def conversation_frame(conversation: dict[str, Any]) -> str:
    """The account joined a conversation: the `Conversation` object, as REST renders it."""
    return frame_json({"type": "conversation", "conversation": conversation})


def conversation_members_frame(
    *, conversation_id: str, change: str, username: str, by: str, members: list[str], current_epoch: int
) -> str:
    return frame_json(
        {
            "type": "conversation_members",
            "conversation_id": conversation_id,
            "change": change,
            "username": username,
            "by": by,
            "members": members,
            "current_epoch": current_epoch,
        }
    )


def link_request_frame(*, device: dict[str, Any], expires_at: str) -> str:
    return frame_json({"type": "link_request", "device": device, "expires_at": expires_at})


def device_list_frame(*, username: str, version: int) -> str:
    return frame_json({"type": "device_list", "username": username, "version": version})


def key_request_frame(key_request: dict[str, Any]) -> str:
    return frame_json({"type": "key_request", "key_request": key_request})


def key_available_frame(*, request_id: str, conversation_id: str, epoch: int) -> str:
    return frame_json(
        {"type": "key_available", "request_id": request_id, "conversation_id": conversation_id, "epoch": epoch}
    )


def pong_frame(frame_id: str) -> str:
    return frame_json({"type": "pong", "id": frame_id})


def error_frame(error: ApiError, frame_id: str | None = None) -> str:
    """The `error` frame (protocol.md 6.2): the REST error object, with the `id` it answers."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message, "extra": error.extra}
    if frame_id is not None:
        frame["id"] = frame_id
    return frame_json(frame)
