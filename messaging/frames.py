"""Parsing of the client-to-server WebSocket frames (protocol.md 6.2), strict and fast.

Rules match the REST serializers exactly (a test feeds both the same inputs): JSON integers only
(no bools, floats or strings), canonical lowercase UUIDs, canonical padded standard base64.
Anything else is `invalid_frame` with `extra.fields`, never an exception escaping the consumer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from common.protocol import MAX_EPOCH, MAX_SEQ
from messaging.errors import FrameInvalidError, FrameTypeUnknownError
from messaging.services import MAX_ATTACHMENTS, MAX_DEVICE_LISTS_BYTES, EnvelopeContent

FETCH_DEFAULT_LIMIT = 100
FETCH_MAX_LIMIT = 500
MAX_PRESENCE_QUERY = 256
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Hello:
    kind: ClassVar[str] = "hello"
    v: int  # any integer: one the server does not speak is `unsupported_version`, not malformed
    token: str


@dataclass(frozen=True)
class Send:
    kind: ClassVar[str] = "send"
    id: str
    sender_device_id: uuid.UUID
    content: EnvelopeContent
    content_client_message_id_b64: str  # as received: echoed in the `sent` frame


@dataclass(frozen=True)
class Cursor:
    """`ack` or `read`: a cumulative position in one conversation."""

    kind: str  # "ack" or "read"
    conversation_id: uuid.UUID
    seq: int


@dataclass(frozen=True)
class Fetch:
    kind: ClassVar[str] = "fetch"
    id: str
    conversation_id: uuid.UUID
    after: int
    limit: int


@dataclass(frozen=True)
class Typing:
    kind: ClassVar[str] = "typing"
    conversation_id: uuid.UUID
    started: bool


@dataclass(frozen=True)
class PresenceQuery:
    kind: ClassVar[str] = "presence"
    id: str
    usernames: list[str]


@dataclass(frozen=True)
class Ping:
    kind: ClassVar[str] = "ping"
    id: str


Frame = Hello | Send | Cursor | Fetch | Typing | PresenceQuery | Ping


class _Fields:
    """Collects per-field errors so one answer names every bad member."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: dict[str, list[str]] = {}

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def integer(self, name: str, *, low: int, high: int, default: int | None = None) -> int:
        value = self.data.get(name, default)
        if value is None:
            self.fail(name, "This field is required.")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "Must be an integer.")
            return 0
        if not low <= value <= high:
            self.fail(name, f"Must be between {low} and {high}.")
            return 0
        return value

    def uuid(self, name: str, data: dict[str, Any] | None = None) -> uuid.UUID:
        value = (self.data if data is None else data).get(name)
        if not isinstance(value, str) or not _CANONICAL_UUID.fullmatch(value):
            self.fail(name, "Must be a UUID in lowercase hyphenated form.")
            return uuid.UUID(int=0)
        return uuid.UUID(value)

    def base64(
        self,
        name: str,
        data: dict[str, Any],
        *,
        length: int | None = None,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> bytes:
        value = data.get(name)
        if not isinstance(value, str):
            self.fail(name, "Must be standard base64 with padding.")
            return b""
        try:
            raw = binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError):
            self.fail(name, "Must be standard base64 with padding.")
            return b""
        if base64.b64encode(raw).decode("ascii") != value:
            self.fail(name, "Must be standard base64 with padding.")
            return b""
        if length is not None and len(raw) != length:
            self.fail(name, f"Must decode to exactly {length} bytes.")
        elif len(raw) < min_length:
            self.fail(name, f"Must decode to at least {min_length} bytes.")
        elif max_length is not None and len(raw) > max_length:
            self.fail(name, f"Must decode to at most {max_length} bytes.")
        return raw

    def frame_id(self) -> str:
        value = self.data.get("id")
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            self.fail("id", "Must be a string of 1 to 64 characters.")
            return ""
        return value

    def done(self) -> None:
        if self.errors:
            frame_id = self.data.get("id")
            raise FrameInvalidError(self.errors, frame_id=frame_id if isinstance(frame_id, str) else None)


def frame_too_large(text: str | None, data: bytes | None, max_bytes: int) -> bool:
    """Whether a WebSocket message is over `max_bytes`, counted in bytes as sent (UTF-8 for a
    text frame): encoded only when its length in characters leaves the answer open."""
    if data is not None:
        return len(data) > max_bytes
    if text is None:
        return False
    if len(text) > max_bytes:
        return True
    return len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes


def frame_parse(text: str) -> Frame:
    """One text frame to a typed frame, or `FrameInvalidError` / `FrameTypeUnknownError`."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameInvalidError({"frame": ["Must be a JSON object."]}) from None
    if not isinstance(data, dict):
        raise FrameInvalidError({"frame": ["Must be a JSON object."]})
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameInvalidError({"type": ["Must be a string."]})
    parser = _PARSERS.get(kind)
    if parser is None:
        error = FrameTypeUnknownError(extra={"type": kind[:64]})
        raise error
    fields = _Fields(data)
    frame: Frame = parser(fields)
    fields.done()
    return frame


def _hello(f: _Fields) -> Hello:
    v = f.integer("v", low=-MAX_SEQ - 1, high=MAX_SEQ)
    token = f.data.get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= 128:
        f.fail("token", "Must be a string.")
        token = ""
    return Hello(v=v, token=token)


def _send(f: _Fields) -> Send:
    frame_id = f.frame_id()
    conversation_id = f.uuid("conversation_id")
    envelope = f.data.get("envelope")
    if not isinstance(envelope, dict):
        f.fail("envelope", "Must be a JSON object.")
        envelope = {}
    ver = envelope.get("version")
    if isinstance(ver, bool) or not isinstance(ver, int):
        f.fail("envelope.version", "Must be an integer.")
        ver = 0
    epoch = envelope.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        f.fail("envelope.epoch", f"Must be an integer between 0 and {MAX_EPOCH}.")
        epoch = 0
    sub = _Fields(envelope)
    sender = sub.uuid("sender_device_id")
    content = EnvelopeContent(
        conversation_id=conversation_id,
        version=ver,
        epoch=epoch,
        client_message_id=sub.base64("client_message_id", envelope, length=16),
        nonce=sub.base64("nonce", envelope, length=12),
        ciphertext=sub.base64("ciphertext", envelope, min_length=16),
        signature=sub.base64("signature", envelope, length=64),
        device_lists=sub.base64("device_lists", envelope, min_length=1, max_length=MAX_DEVICE_LISTS_BYTES),
        attachments=_attachments(sub, envelope),
    )
    for name, messages in sub.errors.items():
        f.errors[f"envelope.{name}"] = messages
    cmid = envelope.get("client_message_id")
    return Send(
        id=frame_id,
        sender_device_id=sender,
        content=content,
        content_client_message_id_b64=cmid if isinstance(cmid, str) else "",
    )


def _attachments(f: _Fields, envelope: dict[str, Any]) -> tuple[uuid.UUID, ...]:
    """The optional list of media blob ids, as the REST serializer reads it."""
    value = envelope.get("attachments", [])
    if not isinstance(value, list):
        f.fail("attachments", f'Expected a list of items but got type "{type(value).__name__}".')
        return ()
    if len(value) > MAX_ATTACHMENTS:
        f.fail("attachments", f"Ensure this field has no more than {MAX_ATTACHMENTS} elements.")
        return ()
    ids: list[uuid.UUID] = []
    for item in value:
        if not isinstance(item, str) or not _CANONICAL_UUID.fullmatch(item):
            f.fail("attachments", "Must be a UUID in lowercase hyphenated form.")
            return ()
        ids.append(uuid.UUID(item))
    return tuple(ids)


def _cursor(f: _Fields) -> Cursor:
    return Cursor(
        kind=str(f.data["type"]),
        conversation_id=f.uuid("conversation_id"),
        seq=f.integer("seq", low=0, high=MAX_SEQ),
    )


def _fetch(f: _Fields) -> Fetch:
    return Fetch(
        id=f.frame_id(),
        conversation_id=f.uuid("conversation_id"),
        after=f.integer("after", low=0, high=MAX_SEQ),
        limit=f.integer("limit", low=1, high=FETCH_MAX_LIMIT, default=FETCH_DEFAULT_LIMIT),
    )


def _typing(f: _Fields) -> Typing:
    state = f.data.get("state")
    if state not in ("start", "stop"):
        f.fail("state", 'Must be "start" or "stop".')
    return Typing(conversation_id=f.uuid("conversation_id"), started=state == "start")


def _presence(f: _Fields) -> PresenceQuery:
    frame_id = f.frame_id()
    names = f.data.get("usernames")
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= MAX_PRESENCE_QUERY
        or not all(isinstance(n, str) and 1 <= len(n) <= 64 for n in names)
    ):
        f.fail("usernames", f"Must be a list of 1 to {MAX_PRESENCE_QUERY} usernames.")
        names = []
    return PresenceQuery(id=frame_id, usernames=list(dict.fromkeys(names)))


def _ping(f: _Fields) -> Ping:
    return Ping(id=f.frame_id())


_PARSERS: dict[str, Callable[[_Fields], Frame]] = {
    "hello": _hello,
    "send": _send,
    "ack": _cursor,
    "read": _cursor,
    "fetch": _fetch,
    "typing": _typing,
    "presence": _presence,
    "ping": _ping,
}
