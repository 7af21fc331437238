"""Every frame the gateway sends (messaging/wire.py) is what the SDK's parser reads, byte for byte
what the gateway sent before the builders were gathered in one module."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from accounts.models import User
from client import frames as sdk
from common.errors import ApiError
from common.ratelimit import RateLimitedError
from devices.models import Device
from messaging import wire
from messaging.errors import CursorBeyondLastSeqError, FrameTooLargeError, GatewayVersionUnsupportedError
from messaging.events import conversation_receipts_event
from messaging.models import Message

CONVERSATION = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")
DEVICE = uuid.UUID("0b7b8c0f-1e2a-4c1e-9d55-6f1c0a0e4a8e")
AT = dt.datetime(2026, 12, 2, 10, 30, 0, 123456, tzinfo=dt.UTC)


def message(seq: int = 7) -> Message:
    sender = Device(id=DEVICE, user=User(username="alice"))
    return Message(
        conversation_id=CONVERSATION,
        seq=seq,
        version=1,
        epoch=3,
        sender_device=sender,
        client_message_id=bytes(range(16)),
        nonce=bytes(12),
        ciphertext=bytes(16),
        signature=bytes(64),
        device_lists=b"\x01",
        created_at=AT,
    )


KEY_REQUEST = {
    "request_id": str(DEVICE),
    "conversation_id": str(CONVERSATION),
    "epoch": 2,
    "username": "bob",
    "device_id": str(DEVICE),
    "status": "pending",
    "created_at": "2026-12-02T10:30:00Z",
}
LINKING_DEVICE = {
    "device_id": str(DEVICE),
    "name": "laptop",
    "x25519_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "ed25519_public_key": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    "created_at": "2026-12-02T10:30:00Z",
}
# The server-to-client table of protocol.md 6.2.
SERVER_FRAME_TYPES = (
    "welcome message sent fetched caught_up receipt typing presence conversation conversation_members "
    "link_request device_list key_request key_available pong error"
).split()
C = str(CONVERSATION)
CMID = "AAECAwQFBgcICQoLDA0ODw=="
D = str(DEVICE)

# (frame text, the SDK's class for it, the exact text the gateway sent before this module)
FRAMES: list[tuple[str, type, str]] = [
    (
        wire.welcome_frame(version=1, device_id=DEVICE, username="alice", heartbeat_s=30),
        sdk.Welcome,
        f'{{"type":"welcome","v":1,"device_id":"{D}","username":"alice","heartbeat_s":30}}',
    ),
    (
        wire.message_frame_json(message()),
        sdk.MessageFrame,
        f'{{"type":"message","conversation_id":"{C}","envelope":{{"seq":7,"conversation_id":"{C}","version":1,'
        f'"epoch":3,"sender_device_id":"{D}","sender_username":"alice",'
        '"client_message_id":"AAECAwQFBgcICQoLDA0ODw==","nonce":"AAAAAAAAAAAAAAAA",'
        '"ciphertext":"AAAAAAAAAAAAAAAAAAAAAA==","signature":"' + "A" * 86 + '==","device_lists":"AQ==",'
        '"created_at":"2026-12-02T10:30:00.123456Z"}}',
    ),
    (
        wire.sent_frame(
            frame_id="s1", message=message(), client_message_id_b64="AAECAwQFBgcICQoLDA0ODw==", created=True
        ),
        sdk.Sent,
        f'{{"type":"sent","id":"s1","conversation_id":"{C}","seq":7,"client_message_id":"AAECAwQFBgcICQoLDA0ODw==",'
        '"created":true,"created_at":"2026-12-02T10:30:00.123456Z"}',
    ),
    (
        wire.fetched_frame(frame_id="f1", conversation_id=CONVERSATION, next_after=9, has_more=False),
        sdk.Fetched,
        f'{{"type":"fetched","id":"f1","conversation_id":"{C}","next_after":9,"has_more":false}}',
    ),
    (wire.CAUGHT_UP_FRAME, sdk.CaughtUp, '{"type":"caught_up"}'),
    (
        conversation_receipts_event(
            CONVERSATION, [{"username": "bob", "device_id": D, "delivered_seq": 3, "read_seq": 1}]
        )["frame"],
        sdk.Receipt,
        f'{{"type":"receipt","conversation_id":"{C}","receipts":[{{"username":"bob","device_id":"{D}",'
        '"delivered_seq":3,"read_seq":1}]}',
    ),
    (
        wire.typing_frame(conversation_id=C, username="bob", device_id=D, state="start", expires_in_ms=6000),
        sdk.Typing,
        f'{{"type":"typing","conversation_id":"{C}","username":"bob","device_id":"{D}","state":"start",'
        '"expires_in_ms":6000}',
    ),
    (
        wire.presence_frame({"bob": True, "carol": False}, "p1"),
        sdk.Presence,
        '{"type":"presence","id":"p1","users":{"bob":{"online":true},"carol":{"online":false}}}',
    ),
    (wire.presence_frame({"bob": False}), sdk.Presence, '{"type":"presence","users":{"bob":{"online":false}}}'),
    (
        wire.conversation_frame({"conversation_id": C, "last_seq": 0}),
        sdk.ConversationJoined,
        f'{{"type":"conversation","conversation":{{"conversation_id":"{C}","last_seq":0}}}}',
    ),
    (
        wire.conversation_members_frame(
            conversation_id=C, change="added", username="carol", by="alice", members=["alice", "carol"], current_epoch=2
        ),
        sdk.ConversationMembers,
        f'{{"type":"conversation_members","conversation_id":"{C}","change":"added","username":"carol",'
        '"by":"alice","members":["alice","carol"],"current_epoch":2}',
    ),
    (
        wire.link_request_frame(device=LINKING_DEVICE, expires_at="2026-12-02T10:40:00Z"),
        sdk.LinkRequest,
        f'{{"type":"link_request","device":{{"device_id":"{D}","name":"laptop",'
        '"x25519_public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","ed25519_public_key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",'
        '"created_at":"2026-12-02T10:30:00Z"},"expires_at":"2026-12-02T10:40:00Z"}',
    ),
    (
        wire.device_list_frame(username="bob", version=4),
        sdk.DeviceListChanged,
        '{"type":"device_list","username":"bob","version":4}',
    ),
    (
        wire.key_request_frame(KEY_REQUEST),
        sdk.KeyRequestFrame,
        f'{{"type":"key_request","key_request":{{"request_id":"{D}","conversation_id":"{C}","epoch":2,'
        f'"username":"bob","device_id":"{D}","status":"pending","created_at":"2026-12-02T10:30:00Z"}}}}',
    ),
    (
        wire.key_available_frame(request_id=D, conversation_id=C, epoch=2),
        sdk.KeyAvailable,
        f'{{"type":"key_available","request_id":"{D}","conversation_id":"{C}","epoch":2}}',
    ),
    (wire.pong_frame("p9"), sdk.Pong, '{"type":"pong","id":"p9"}'),
    (
        wire.error_frame(RateLimitedError(3), "p9"),
        sdk.ErrorFrame,
        '{"type":"error","code":"rate_limited","message":"Too many requests; retry later.",'
        '"extra":{"retry_after_s":3},"id":"p9"}',
    ),
]


@pytest.mark.parametrize(("text", "kind", "before"), FRAMES, ids=[kind.__name__ for _, kind, _ in FRAMES])
def test_every_frame_the_gateway_sends_parses_in_the_sdk_and_keeps_its_bytes(
    text: str, kind: type, before: str
) -> None:
    assert isinstance(sdk.decode_frame(text), kind)
    assert text == before


def test_every_server_frame_type_of_the_protocol_is_built_here() -> None:
    built = {text.split('"', 4)[3] for text, _, _ in FRAMES}
    assert built == set(SERVER_FRAME_TYPES)


@pytest.mark.parametrize(
    "error",
    [FrameTooLargeError(131072), GatewayVersionUnsupportedError([1]), CursorBeyondLastSeqError(CONVERSATION, 1)],
    ids=lambda error: error.code,
)
def test_the_gateways_own_errors_reach_the_sdk_with_their_code_and_extra(error: ApiError) -> None:
    parsed = sdk.decode_frame(wire.error_frame(error))
    assert isinstance(parsed, sdk.ErrorFrame)
    assert (parsed.code, parsed.extra) == (error.code, error.extra)
