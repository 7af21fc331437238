"""The §6 frame layer: every client frame built as the document says, every server frame parsed,
malformed ones refused with FrameError, unknown types tolerated."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from client import frames as fr
from client.crypto.encoding import b64e
from client.protocol import KeyRequestInfo

CID = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")
DEV = uuid.UUID("0f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2b")


def envelope(seq: int = 3, conversation_id: uuid.UUID = CID) -> dict[str, Any]:
    return {
        "seq": seq,
        "conversation_id": str(conversation_id),
        "version": 1,
        "epoch": 1,
        "sender_device_id": str(DEV),
        "sender_username": "alice",
        "client_message_id": b64e(b"m" * 16),
        "nonce": b64e(b"n" * 12),
        "ciphertext": b64e(b"c" * 80),
        "signature": b64e(b"s" * 64),
        "device_lists": b64e(b"l" * 41),
        "created_at": "2026-11-25T19:00:00Z",
    }


def test_client_frames_match_the_document() -> None:
    body = {"version": 1, "epoch": 1}
    assert fr.hello_frame("tok") == {"type": "hello", "v": 1, "token": "tok"}
    assert fr.send_frame(frame_id="o1", conversation_id=CID, envelope=body) == {
        "type": "send",
        "id": "o1",
        "conversation_id": str(CID),
        "envelope": body,
    }
    assert fr.ack_frame(CID, 7) == {"type": "ack", "conversation_id": str(CID), "seq": 7}
    assert fr.read_frame(CID, 7) == {"type": "read", "conversation_id": str(CID), "seq": 7}
    assert fr.fetch_frame(frame_id="f1", conversation_id=CID, after=2, limit=5) == {
        "type": "fetch",
        "id": "f1",
        "conversation_id": str(CID),
        "after": 2,
        "limit": 5,
    }
    assert "limit" not in fr.fetch_frame(frame_id="f1", conversation_id=CID, after=0)
    assert fr.typing_frame(CID, active=True)["state"] == "start"
    assert fr.typing_frame(CID, active=False)["state"] == "stop"
    assert fr.presence_query_frame(frame_id="p1", usernames=["bob"]) == {
        "type": "presence",
        "id": "p1",
        "usernames": ["bob"],
    }
    assert fr.ping_frame("q1") == {"type": "ping", "id": "q1"}
    assert json.loads(fr.encode_frame(fr.ack_frame(CID, 1))) == fr.ack_frame(CID, 1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: fr.ack_frame(CID, -1),
        lambda: fr.read_frame(CID, True),  # a bool is not a seq
        lambda: fr.fetch_frame(frame_id="f", conversation_id=CID, after=0, limit=0),
        lambda: fr.fetch_frame(frame_id="f", conversation_id=CID, after=0, limit=501),
        lambda: fr.presence_query_frame(frame_id="p", usernames=[]),
        lambda: fr.presence_query_frame(frame_id="p", usernames=["u"] * 257),
    ],
)
def test_client_frame_builders_refuse_out_of_range_values(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


def test_server_frames_parse_into_typed_objects() -> None:
    welcome = fr.parse_frame({"type": "welcome", "v": 1, "device_id": str(DEV), "username": "a", "heartbeat_s": 30})
    assert welcome == fr.Welcome(DEV, "a", 30)
    message = fr.parse_frame({"type": "message", "conversation_id": str(CID), "envelope": envelope()})
    assert isinstance(message, fr.MessageFrame) and message.envelope.seq == 3
    sent = fr.parse_frame(
        {
            "type": "sent",
            "id": "o4",
            "conversation_id": str(CID),
            "seq": 9,
            "client_message_id": b64e(b"m" * 16),
            "created": False,
            "created_at": "t",
        }
    )
    assert sent == fr.Sent("o4", CID, 9, b"m" * 16, False, "t")
    fetched = fr.parse_frame(
        {"type": "fetched", "id": "f1", "conversation_id": str(CID), "next_after": 5, "has_more": True}
    )
    assert fetched == fr.Fetched("f1", CID, 5, True)
    assert fr.parse_frame({"type": "caught_up"}) == fr.CaughtUp()
    receipt = fr.parse_frame(
        {
            "type": "receipt",
            "conversation_id": str(CID),
            "receipts": [{"username": "b", "device_id": str(DEV), "delivered_seq": 4, "read_seq": 2}],
        }
    )
    assert receipt == fr.Receipt(CID, (fr.DeviceReceipt("b", DEV, 4, 2),))
    typing = fr.parse_frame(
        {
            "type": "typing",
            "conversation_id": str(CID),
            "username": "b",
            "device_id": str(DEV),
            "state": "start",
            "expires_in_ms": 6000,
        }
    )
    assert typing == fr.Typing(CID, "b", DEV, True, 6000)
    presence = fr.parse_frame({"type": "presence", "id": "p1", "users": {"b": {"online": True}}})
    assert presence == fr.Presence({"b": True}, "p1")
    assert fr.parse_frame({"type": "presence", "users": {}}) == fr.Presence({}, None)
    joined = fr.parse_frame({"type": "conversation", "conversation": {"conversation_id": str(CID)}})
    assert isinstance(joined, fr.ConversationJoined)
    assert fr.parse_frame({"type": "pong", "id": "q1"}) == fr.Pong("q1")
    error = fr.parse_frame({"type": "error", "id": "o1", "code": "stale_epoch", "message": "m", "extra": {"x": 1}})
    assert error == fr.ErrorFrame("stale_epoch", "m", {"x": 1}, "o1")
    assert fr.parse_frame({"type": "error", "code": "auth_timeout"}) == fr.ErrorFrame("auth_timeout", "", {}, None)


def test_unknown_members_and_frame_types_are_tolerated() -> None:
    assert fr.parse_frame({"type": "pong", "id": "q", "new_member": [1]}) == fr.Pong("q")
    unknown = fr.parse_frame({"type": "from_the_future", "x": 1})
    assert isinstance(unknown, fr.UnknownFrame) and unknown.type == "from_the_future"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"no_type": 1}',
        '{"type": 5}',
        '{"type": "sent", "id": "o1"}',
        '{"type": "fetched", "id": "f", "conversation_id": "not-a-uuid", "next_after": 1, "has_more": false}',
        json.dumps({"type": "welcome", "device_id": str(DEV), "username": "a", "heartbeat_s": "30"}),
        json.dumps(
            {
                "type": "typing",
                "conversation_id": str(CID),
                "username": "b",
                "device_id": str(DEV),
                "state": "maybe",
                "expires_in_ms": 1,
            }
        ),
        '{"type": "presence", "users": {"b": {"online": 1}}}',
        json.dumps({"type": "receipt", "conversation_id": str(CID), "receipts": {}}),
    ],
)
def test_malformed_server_frames_raise_frame_error(raw: str) -> None:
    with pytest.raises(fr.FrameError):
        fr.decode_frame(raw)


def test_a_message_frame_whose_envelope_names_another_conversation_is_refused() -> None:
    other = uuid.uuid4()
    with pytest.raises(fr.FrameError):
        fr.parse_frame({"type": "message", "conversation_id": str(other), "envelope": envelope()})


def test_binary_messages_are_not_frames() -> None:
    with pytest.raises(fr.FrameError):
        fr.decode_frame(b'{"type": "pong", "id": "q"}')


def test_link_request_and_device_list_frames_are_parsed() -> None:
    device = {
        "device_id": str(DEV),
        "name": "phone",
        "x25519_public_key": b64e(b"x" * 32),
        "ed25519_public_key": b64e(b"e" * 32),
        "created_at": "2026-11-26T01:00:00Z",
    }
    frame = fr.decode_frame(
        json.dumps({"type": "link_request", "device": device, "expires_at": "2026-11-26T01:10:00Z"})
    )
    assert frame == fr.LinkRequest(DEV, "phone", b"x" * 32, b"e" * 32, "2026-11-26T01:00:00Z", "2026-11-26T01:10:00Z")
    changed = fr.decode_frame(json.dumps({"type": "device_list", "username": "alice", "version": 3}))
    assert changed == fr.DeviceListChanged("alice", 3)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "link_request", "device": "phone", "expires_at": "x"},
        {"type": "link_request", "device": {"device_id": str(DEV)}, "expires_at": "x"},
        {"type": "device_list", "username": "alice", "version": "3"},
    ],
)
def test_malformed_link_frames_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(fr.FrameError):
        fr.parse_frame(data)


def test_key_request_and_key_available_frames_are_parsed() -> None:
    request_id = uuid.UUID("11111111-2222-4333-8444-555555555555")
    inner = {
        "request_id": str(request_id),
        "conversation_id": str(CID),
        "epoch": 2,
        "username": "alice",
        "device_id": str(DEV),
        "status": "open",
        "created_at": "2026-11-26T01:00:00Z",
    }
    frame = fr.decode_frame(json.dumps({"type": "key_request", "key_request": inner}))
    assert frame == fr.KeyRequestFrame(KeyRequestInfo(request_id, CID, 2, "alice", DEV, "open", "2026-11-26T01:00:00Z"))
    available = {"type": "key_available", "request_id": str(request_id), "conversation_id": str(CID), "epoch": 2}
    assert fr.decode_frame(json.dumps(available)) == fr.KeyAvailable(request_id, CID, 2)
    with pytest.raises(fr.FrameError):
        fr.decode_frame(json.dumps({**available, "epoch": "2"}))
    with pytest.raises(fr.FrameError):
        fr.decode_frame(json.dumps({"type": "key_request", "key_request": "nope"}))


def test_conversation_members_frames_are_parsed_and_malformed_ones_refused() -> None:
    raw = {
        "type": "conversation_members",
        "conversation_id": str(CID),
        "change": "removed",
        "username": "carol",
        "by": "alice",
        "members": ["alice", "bob"],
        "current_epoch": 2,
    }
    assert fr.decode_frame(json.dumps(raw)) == fr.ConversationMembers(
        CID, "removed", "carol", "alice", ["alice", "bob"], 2
    )
    with pytest.raises(fr.FrameError):
        fr.decode_frame(json.dumps({**raw, "members": "alice"}))
