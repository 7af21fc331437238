"""The WebSocket frame parser accepts exactly what the REST send accepts, field by field."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from messaging import frames
from messaging.apis import MessageListCreateApi
from messaging.errors import FrameInvalidError, FrameTypeUnknownError

VALID: dict[str, Any] = {
    "version": 1,
    "epoch": 1,
    "sender_device_id": "6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a",
    "client_message_id": "AAAAAAAAAAAAAAAAAAAAAA==",
    "nonce": "AAAAAAAAAAAAAAAA",
    "ciphertext": "A" * 24,
    "signature": "A" * 86 + "==",
    "device_lists": "AAAA",
}

VARIANTS: list[tuple[str, Any]] = [
    ("version", "1"),
    ("version", True),
    ("version", 1.0),
    ("version", 7),  # well-formed: refused later as unsupported_version, not here
    ("epoch", -1),
    ("epoch", 2**31),
    ("epoch", None),
    ("sender_device_id", "6F1C0A0E-4C1E-4A8E-9D55-0B7B8C0F1E2A"),
    ("sender_device_id", "{6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a}"),
    ("sender_device_id", 5),
    ("client_message_id", "AAAAAAAAAAAAAAAAAAAAAA"),  # no padding
    ("client_message_id", "AAAAAAAAAAAAAAAAAAAAAB=="),  # non-canonical trailing bits
    ("client_message_id", "AAAAAAAAAAAAAAAAAAAA"),  # 15 bytes
    ("nonce", "AAAAAAAAAAAAAAA-"),  # URL-safe alphabet
    ("nonce", "AAAA AAAAAAAAAAA"),
    ("ciphertext", "AAAA"),  # shorter than a tag
    ("ciphertext", "é" * 24),
    ("signature", "A" * 84),
    ("device_lists", ""),  # empty
    ("device_lists", None),
    ("device_lists", "AAA="),  # non-canonical trailing bits
    ("device_lists", "A" * 87384),  # 65,538 bytes: more than the server stores
    ("attachments", "6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a"),
    ("attachments", None),
    ("attachments", [1]),
    ("attachments", ["6F1C0A0E-4C1E-4A8E-9D55-0B7B8C0F1E2A"]),
    ("attachments", ["6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a"] * 17),
    ("attachments", ["6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a"] * 16),  # well-formed
    ("attachments", []),
]


def rest_bad_fields(body: dict[str, Any]) -> set[str]:
    serializer = MessageListCreateApi.InputSerializer(data=body)
    return set() if serializer.is_valid() else set(serializer.errors)


def frame_bad_fields(body: dict[str, Any]) -> set[str]:
    text = json.dumps({"type": "send", "id": "x", "conversation_id": str(uuid.uuid4()), "envelope": body})
    try:
        frames.frame_parse(text)
    except FrameInvalidError as error:
        return {name.removeprefix("envelope.") for name in error.extra["fields"]}
    return set()


def test_a_valid_envelope_parses_to_the_same_content() -> None:
    frame = frames.frame_parse(
        json.dumps({"type": "send", "id": "x", "conversation_id": str(uuid.uuid4()), "envelope": VALID})
    )
    assert isinstance(frame, frames.Send)
    serializer = MessageListCreateApi.InputSerializer(data=VALID)
    assert serializer.is_valid()
    data = serializer.validated_data
    assert frame.sender_device_id == data["sender_device_id"]
    assert (frame.content.nonce, frame.content.ciphertext) == (data["nonce"], data["ciphertext"])
    assert frame.content.device_lists == data["device_lists"] == b"\x00\x00\x00"


@pytest.mark.parametrize(("field", "value"), VARIANTS)
def test_frame_and_rest_refuse_the_same_fields(field: str, value: Any) -> None:
    body = {**VALID, field: value}
    assert frame_bad_fields(body) == rest_bad_fields(body)


@pytest.mark.parametrize("field", sorted(VALID))
def test_a_missing_field_is_refused_by_both(field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    assert frame_bad_fields(body) == rest_bad_fields(body) == {field}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "null",
        "1",
        '"send"',
        "[]",
        '{"type": 1}',
        '{"type": "send"}',
        '{"type": "ack"}',
        "{" * 100000,
        '{"type": "presence", "id": "q", "usernames": []}',
    ],
)
def test_garbage_is_a_frame_error_never_an_exception(text: str) -> None:
    with pytest.raises((FrameInvalidError, FrameTypeUnknownError)):
        frames.frame_parse(text)


def test_attachments_parse_to_the_same_blob_ids_on_both_paths() -> None:
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    body = {**VALID, "attachments": ids}
    frame = frames.frame_parse(
        json.dumps({"type": "send", "id": "x", "conversation_id": str(uuid.uuid4()), "envelope": body})
    )
    assert isinstance(frame, frames.Send)
    serializer = MessageListCreateApi.InputSerializer(data=body)
    assert serializer.is_valid()
    assert list(frame.content.attachments) == serializer.validated_data["attachments"] == [uuid.UUID(i) for i in ids]
    plain = frames.frame_parse(
        json.dumps({"type": "send", "id": "x", "conversation_id": str(uuid.uuid4()), "envelope": VALID})
    )
    assert isinstance(plain, frames.Send) and plain.content.attachments == ()
