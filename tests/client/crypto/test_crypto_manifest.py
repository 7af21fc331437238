"""Epoch manifests (docs/protocol.md 2.18): the document's known-answer vector, reproduced; then
a forged, moved, reordered or truncated manifest is refused."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.crypto.keys import DeviceKeyPair
from client.crypto.manifest import (
    ManifestError,
    epoch_manifest_build,
    epoch_manifest_parse,
    epoch_manifest_verify,
)

PROTOCOL_MD = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
LAPTOP = DeviceKeyPair(
    uuid.UUID("11111111-1111-4111-8111-111111111111"),
    X25519PrivateKey.from_private_bytes(bytes([0x11]) * 32),
    Ed25519PrivateKey.from_private_bytes(bytes([0x12]) * 32),
)
PHONE = uuid.UUID("22222222-2222-4222-8222-222222222222")
BOB = uuid.UUID("44444444-4444-4444-8444-444444444444")
CONVERSATION = uuid.UUID("33333333-3333-4333-8333-333333333333")
ALICE_V2_HASH = bytes.fromhex("fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a")


def _vector(name: str) -> bytes:
    text = PROTOCOL_MD.read_text()
    section = text[text.index("### 2.18") :]
    match = re.search(rf"^{name}\s+([0-9a-f]+(?:\n\s+[0-9a-f]+)*)", section, re.MULTILINE)
    assert match is not None, name
    return bytes.fromhex("".join(match.group(1).split()))


def _build(epoch: int = 2) -> tuple[bytes, bytes]:
    return epoch_manifest_build(
        conversation_id=CONVERSATION,
        epoch=epoch,
        creator=LAPTOP,
        lists={"alice": (2, ALICE_V2_HASH), "bob": (1, bytes([0xBB]) * 32)},
        devices={"bob": [BOB], "alice": [PHONE, LAPTOP.device_id]},
    )


def test_manifest_matches_the_protocol_vector() -> None:
    data, signature = _build()

    assert data == _vector("epoch_manifest")
    assert signature == _vector("manifest_signature")


def test_verify_returns_the_devices_by_owner() -> None:
    data, signature = _build()

    manifest = epoch_manifest_verify(
        data=data,
        signature=signature,
        conversation_id=CONVERSATION,
        epoch=2,
        creator_ed25519_public_key=LAPTOP.ed25519_public_key,
    )

    assert manifest.creator_device_id == LAPTOP.device_id
    assert manifest.devices() == {LAPTOP.device_id: "alice", PHONE: "alice", BOB: "bob"}


def test_verify_refuses_a_flipped_signature() -> None:
    data, signature = _build()
    flipped = bytes([signature[0] ^ 1]) + signature[1:]

    with pytest.raises(ManifestError):
        epoch_manifest_verify(
            data=data,
            signature=flipped,
            conversation_id=CONVERSATION,
            epoch=2,
            creator_ed25519_public_key=LAPTOP.ed25519_public_key,
        )


def test_verify_refuses_a_manifest_of_another_epoch() -> None:
    data, signature = _build(epoch=3)

    with pytest.raises(ManifestError, match="another conversation or epoch"):
        epoch_manifest_verify(
            data=data,
            signature=signature,
            conversation_id=CONVERSATION,
            epoch=2,
            creator_ed25519_public_key=LAPTOP.ed25519_public_key,
        )


def test_parse_refuses_truncated_or_trailing_bytes() -> None:
    data, _ = _build()

    with pytest.raises(ManifestError):
        epoch_manifest_parse(data[:-1])
    with pytest.raises(ManifestError):
        epoch_manifest_parse(data + b"\x00")


def test_parse_refuses_devices_out_of_order() -> None:
    data, _ = _build()
    # alice's two devices swapped: same set, non-canonical encoding.
    laptop, phone = LAPTOP.device_id.bytes, PHONE.bytes
    swapped = data.replace(laptop + phone, phone + laptop)

    with pytest.raises(ManifestError, match="canonical"):
        epoch_manifest_parse(swapped)
