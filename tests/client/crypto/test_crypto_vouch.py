"""Device vouches (protocol.md 2.1)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.vouch import vouch_message, vouch_sign, vouch_verify

IDENTITY = IdentityKeyPair.generate()
DEVICE = DeviceKeyPair.generate()
OTHER_DEVICE = DeviceKeyPair.generate()


def _verify(**overrides: Any) -> bool:
    arguments: dict[str, Any] = {
        "identity_public_key": IDENTITY.public_key,
        "signature": vouch_sign(IDENTITY, DEVICE, "alice"),
        "username": "alice",
        "device_id": DEVICE.device_id,
        "x25519_public_key": DEVICE.x25519_public_key,
        "ed25519_public_key": DEVICE.ed25519_public_key,
    }
    arguments.update(overrides)
    return vouch_verify(**arguments)


def test_vouch_message_is_the_spec_layout() -> None:
    device_id, x, e = uuid.uuid4(), b"X" * 32, b"E" * 32
    expected = b"e2ee-msg/v1/device-vouch" + b"\x00\x05alice" + device_id.bytes + x + e
    assert vouch_message(username="alice", device_id=device_id, x25519_public_key=x, ed25519_public_key=e) == expected
    assert vouch_message(username="zoë", device_id=device_id, x25519_public_key=x, ed25519_public_key=e)[24:30] == (
        b"\x00\x04zo\xc3\xab"
    )


def test_a_genuine_vouch_verifies() -> None:
    assert _verify()
    assert len(vouch_sign(IDENTITY, DEVICE, "alice")) == 64


@pytest.mark.parametrize(
    "overrides",
    [
        {"username": "mallory"},
        {"username": "alice "},
        {"device_id": OTHER_DEVICE.device_id},
        {"x25519_public_key": OTHER_DEVICE.x25519_public_key},
        {"ed25519_public_key": OTHER_DEVICE.ed25519_public_key},
        {"identity_public_key": IdentityKeyPair.generate().public_key},
        {"signature": vouch_sign(IDENTITY, OTHER_DEVICE, "alice")},
        {"signature": vouch_sign(IDENTITY, DEVICE, "bob")},
    ],
    ids=[
        "username",
        "username-trailing-space",
        "device-id",
        "x25519",
        "ed25519",
        "identity",
        "other-device-sig",
        "other-user-sig",
    ],
)
def test_a_vouch_over_anything_else_fails(overrides: dict[str, Any]) -> None:
    assert not _verify(**overrides)


def test_any_flipped_bit_in_a_vouch_signature_fails() -> None:
    signature = vouch_sign(IDENTITY, DEVICE, "alice")
    for i in range(len(signature) * 8):
        flipped = bytearray(signature)
        flipped[i // 8] ^= 1 << (i % 8)
        assert not _verify(signature=bytes(flipped))


@pytest.mark.parametrize(
    "overrides",
    [
        {"signature": b""},
        {"signature": None},
        {"identity_public_key": b"\x00" * 31},
        {"identity_public_key": "not bytes"},
        {"x25519_public_key": DEVICE.x25519_public_key + b"\x00"},
        {"ed25519_public_key": None},
        {"device_id": str(DEVICE.device_id)},
        {"username": "x" * 70000},
        {"username": "\ud800"},
        {"username": None},
    ],
)
def test_vouch_verify_returns_false_instead_of_raising_on_malformed_input(overrides: dict[str, Any]) -> None:
    assert _verify(**overrides) is False
