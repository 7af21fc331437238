"""The realtime frame protocol (docs/protocol.md §6): builders and parsers, with no I/O.

Client frames are built as plain JSON objects (`dict`); server frames are parsed into typed,
frozen dataclasses. Unknown members are ignored (§6.2, forward compatibility); a server frame whose
`type` this SDK does not know parses as `UnknownFrame` so a newer server cannot break an older
client. A known frame with a missing or ill-typed member raises `FrameError`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.crypto.encoding import b64d
from client.protocol import PROTOCOL_VERSION, Envelope, KeyRequestInfo

SUBPROTOCOL = "e2ee.v1"
WS_PATH = "/ws/v1/"
TYPING_STATES = ("start", "stop")
MAX_FETCH_LIMIT = 500
MAX_PRESENCE_USERNAMES = 256

# Close codes of §6.2.
CLOSE_INVALID_TOKEN = 4401
CLOSE_DEVICE_NOT_ACTIVE = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_FRAME_TOO_LARGE = 4413  # a frame over E2EE_WS_MAX_FRAME_BYTES (after `frame_too_large`)
CLOSE_ACK_TIMEOUT = 4420  # acknowledgements stopped (`ack_timeout`): reconnect and catch up
CLOSE_SERVER_ERROR = 1011
CLOSE_SERVER_RESTARTING = 1012


class FrameError(ValueError):
    """A server frame that is not what §6.2 describes (not JSON, not an object, bad member)."""


# ---------------------------------------------------------------------------------------------
# Client to server


def hello_frame(token: str) -> dict[str, Any]:
    return {"type": "hello", "v": PROTOCOL_VERSION, "token": token}


def send_frame(*, frame_id: str, conversation_id: uuid.UUID, envelope: dict[str, Any]) -> dict[str, Any]:
    """`envelope` is exactly the REST send body of §4.4 (`protocol.send_request(...).json`)."""
    return {"type": "send", "id": frame_id, "conversation_id": str(conversation_id), "envelope": envelope}


def ack_frame(conversation_id: uuid.UUID, seq: int) -> dict[str, Any]:
    return {"type": "ack", "conversation_id": str(conversation_id), "seq": _non_negative(seq)}


def read_frame(conversation_id: uuid.UUID, seq: int) -> dict[str, Any]:
    return {"type": "read", "conversation_id": str(conversation_id), "seq": _non_negative(seq)}


def fetch_frame(*, frame_id: str, conversation_id: uuid.UUID, after: int, limit: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "fetch",
        "id": frame_id,
        "conversation_id": str(conversation_id),
        "after": _non_negative(after),
    }
    if limit is not None:
        if not 1 <= limit <= MAX_FETCH_LIMIT:
            raise ValueError(f"a fetch limit is 1 to {MAX_FETCH_LIMIT}")
        frame["limit"] = limit
    return frame


def typing_frame(conversation_id: uuid.UUID, *, active: bool) -> dict[str, Any]:
    return {"type": "typing", "conversation_id": str(conversation_id), "state": "start" if active else "stop"}


def presence_query_frame(*, frame_id: str, usernames: list[str]) -> dict[str, Any]:
    if not 1 <= len(usernames) <= MAX_PRESENCE_USERNAMES:
        raise ValueError(f"a presence query names 1 to {MAX_PRESENCE_USERNAMES} users")
    return {"type": "presence", "id": frame_id, "usernames": list(usernames)}


def ping_frame(frame_id: str) -> dict[str, Any]:
    return {"type": "ping", "id": frame_id}


def encode_frame(frame: dict[str, Any]) -> str:
    """One text message (§6.2): compact JSON, no NaN."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _non_negative(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a sequence number is a non-negative integer")
    return value


# ---------------------------------------------------------------------------------------------
# Server to client


@dataclass(frozen=True)
class Welcome:
    device_id: uuid.UUID
    username: str
    heartbeat_s: int


@dataclass(frozen=True)
class MessageFrame:
    conversation_id: uuid.UUID
    envelope: Envelope


@dataclass(frozen=True)
class Sent:
    id: str
    conversation_id: uuid.UUID
    seq: int
    client_message_id: bytes
    created: bool
    created_at: str


@dataclass(frozen=True)
class Fetched:
    id: str
    conversation_id: uuid.UUID
    next_after: int
    has_more: bool


@dataclass(frozen=True)
class CaughtUp:
    pass


@dataclass(frozen=True)
class DeviceReceipt:
    username: str
    device_id: uuid.UUID
    delivered_seq: int
    read_seq: int


@dataclass(frozen=True)
class Receipt:
    conversation_id: uuid.UUID
    receipts: tuple[DeviceReceipt, ...]


@dataclass(frozen=True)
class Typing:
    conversation_id: uuid.UUID
    username: str
    device_id: uuid.UUID
    active: bool
    expires_in_ms: int


@dataclass(frozen=True)
class Presence:
    users: dict[str, bool]  # username -> online
    id: str | None = None


@dataclass(frozen=True)
class ConversationJoined:
    conversation: dict[str, Any]  # the Conversation object of §3.2, parse with protocol.Conversation


@dataclass(frozen=True)
class ConversationMembers:
    """A member was added, removed or left (protocol.md 6.2)."""

    conversation_id: uuid.UUID
    change: str  # "added" | "removed" | "left"
    username: str
    by: str
    members: list[str]
    current_epoch: int


@dataclass(frozen=True)
class LinkRequest:
    """A new device asks to join this account (protocol.md 4.7): show it, with its fingerprint,
    and ask the person for the code it displays."""

    device_id: uuid.UUID
    name: str
    x25519_public_key: bytes
    ed25519_public_key: bytes
    created_at: str
    expires_at: str


@dataclass(frozen=True)
class DeviceListChanged:
    """An account's signed device list has a new version: read it again before trusting it."""

    username: str
    version: int


@dataclass(frozen=True)
class KeyRequestFrame:
    """Another member device lacks an epoch's ChatKey (§4.8): re-wrap it if it is entitled."""

    key_request: KeyRequestInfo


@dataclass(frozen=True)
class KeyAvailable:
    """A ChatKey this device asked for was wrapped for it: fetch its keys again (§4.8)."""

    request_id: uuid.UUID
    conversation_id: uuid.UUID
    epoch: int


@dataclass(frozen=True)
class Pong:
    id: str


@dataclass(frozen=True)
class ErrorFrame:
    code: str
    message: str
    extra: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class UnknownFrame:
    type: str
    data: dict[str, Any]


ServerFrame = (
    Welcome
    | MessageFrame
    | Sent
    | Fetched
    | CaughtUp
    | Receipt
    | Typing
    | Presence
    | ConversationJoined
    | ConversationMembers
    | LinkRequest
    | DeviceListChanged
    | KeyRequestFrame
    | KeyAvailable
    | Pong
    | ErrorFrame
    | UnknownFrame
)


def decode_frame(text: str | bytes) -> ServerFrame:
    """Parse one WebSocket message of the server. Binary messages are not frames (§6.2)."""
    if not isinstance(text, str):
        raise FrameError("binary WebSocket messages are not frames")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"not JSON: {exc}") from None
    return parse_frame(data)


def parse_frame(data: Any) -> ServerFrame:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise FrameError("a frame is a JSON object with a string member 'type'")
    kind = data["type"]
    parser = _PARSERS.get(kind)
    if parser is None:
        return UnknownFrame(kind, data)
    try:
        return parser(data)
    except FrameError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"malformed {kind!r} frame: {exc!r}") from None


def _str(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise FrameError(f"{key!r} must be a string")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"{key!r} must be an integer")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise FrameError(f"{key!r} must be a boolean")
    return value


def _uuid(data: dict[str, Any], key: str) -> uuid.UUID:
    return uuid.UUID(_str(data, key))


def _optional_id(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    return value if isinstance(value, str) else None


def _welcome(data: dict[str, Any]) -> Welcome:
    return Welcome(
        device_id=_uuid(data, "device_id"), username=_str(data, "username"), heartbeat_s=_int(data, "heartbeat_s")
    )


def _message(data: dict[str, Any]) -> MessageFrame:
    envelope = data["envelope"]
    if not isinstance(envelope, dict):
        raise FrameError("'envelope' must be an object")
    conversation_id = _uuid(data, "conversation_id")
    parsed = Envelope.parse(envelope)
    if parsed.conversation_id != conversation_id:
        raise FrameError("the envelope names another conversation than the frame")
    return MessageFrame(conversation_id=conversation_id, envelope=parsed)


def _sent(data: dict[str, Any]) -> Sent:
    return Sent(
        id=_str(data, "id"),
        conversation_id=_uuid(data, "conversation_id"),
        seq=_int(data, "seq"),
        client_message_id=b64d(_str(data, "client_message_id"), length=16),
        created=_bool(data, "created"),
        created_at=_str(data, "created_at"),
    )


def _fetched(data: dict[str, Any]) -> Fetched:
    return Fetched(
        id=_str(data, "id"),
        conversation_id=_uuid(data, "conversation_id"),
        next_after=_int(data, "next_after"),
        has_more=_bool(data, "has_more"),
    )


def _caught_up(data: dict[str, Any]) -> CaughtUp:
    return CaughtUp()


def _receipt(data: dict[str, Any]) -> Receipt:
    rows = data["receipts"]
    if not isinstance(rows, list):
        raise FrameError("'receipts' must be a list")
    receipts = []
    for row in rows:
        if not isinstance(row, dict):
            raise FrameError("a receipt is an object")
        receipts.append(
            DeviceReceipt(
                username=_str(row, "username"),
                device_id=_uuid(row, "device_id"),
                delivered_seq=_int(row, "delivered_seq"),
                read_seq=_int(row, "read_seq"),
            )
        )
    return Receipt(conversation_id=_uuid(data, "conversation_id"), receipts=tuple(receipts))


def _typing(data: dict[str, Any]) -> Typing:
    state = _str(data, "state")
    if state not in TYPING_STATES:
        raise FrameError(f"'state' must be one of {TYPING_STATES}")
    return Typing(
        conversation_id=_uuid(data, "conversation_id"),
        username=_str(data, "username"),
        device_id=_uuid(data, "device_id"),
        active=state == "start",
        expires_in_ms=_int(data, "expires_in_ms"),
    )


def _presence(data: dict[str, Any]) -> Presence:
    users = data["users"]
    if not isinstance(users, dict):
        raise FrameError("'users' must be an object")
    online: dict[str, bool] = {}
    for username, state in users.items():
        if not isinstance(state, dict):
            raise FrameError("a presence entry is an object")
        online[username] = _bool(state, "online")
    return Presence(users=online, id=_optional_id(data))


def _conversation(data: dict[str, Any]) -> ConversationJoined:
    conversation = data["conversation"]
    if not isinstance(conversation, dict):
        raise FrameError("'conversation' must be an object")
    return ConversationJoined(conversation=conversation)


def _conversation_members(data: dict[str, Any]) -> ConversationMembers:
    members = data["members"]
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise FrameError("'members' must be a list of usernames")
    return ConversationMembers(
        conversation_id=_uuid(data, "conversation_id"),
        change=_str(data, "change"),
        username=_str(data, "username"),
        by=_str(data, "by"),
        members=list(members),
        current_epoch=_int(data, "current_epoch"),
    )


def _link_request(data: dict[str, Any]) -> LinkRequest:
    device = data["device"]
    if not isinstance(device, dict):
        raise FrameError("'device' must be an object")
    return LinkRequest(
        device_id=_uuid(device, "device_id"),
        name=_str(device, "name"),
        x25519_public_key=b64d(_str(device, "x25519_public_key"), length=32),
        ed25519_public_key=b64d(_str(device, "ed25519_public_key"), length=32),
        created_at=_str(device, "created_at"),
        expires_at=_str(data, "expires_at"),
    )


def _device_list(data: dict[str, Any]) -> DeviceListChanged:
    return DeviceListChanged(username=_str(data, "username"), version=_int(data, "version"))


def _key_request(data: dict[str, Any]) -> KeyRequestFrame:
    inner = data["key_request"]
    if not isinstance(inner, dict):
        raise FrameError("'key_request' must be an object")
    return KeyRequestFrame(KeyRequestInfo.parse(inner))


def _key_available(data: dict[str, Any]) -> KeyAvailable:
    return KeyAvailable(_uuid(data, "request_id"), _uuid(data, "conversation_id"), _int(data, "epoch"))


def _pong(data: dict[str, Any]) -> Pong:
    return Pong(id=_str(data, "id"))


def _error(data: dict[str, Any]) -> ErrorFrame:
    extra = data.get("extra")
    message = data.get("message")
    return ErrorFrame(
        code=_str(data, "code"),
        message=message if isinstance(message, str) else "",
        extra=extra if isinstance(extra, dict) else {},
        id=_optional_id(data),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], ServerFrame]] = {
    "key_request": _key_request,
    "key_available": _key_available,
    "welcome": _welcome,
    "message": _message,
    "sent": _sent,
    "fetched": _fetched,
    "caught_up": _caught_up,
    "receipt": _receipt,
    "typing": _typing,
    "presence": _presence,
    "conversation": _conversation,
    "conversation_members": _conversation_members,
    "link_request": _link_request,
    "device_list": _device_list,
    "pong": _pong,
    "error": _error,
}
