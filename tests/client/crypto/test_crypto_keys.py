"""Identity and device keys: injectable randomness, private serialisation, signatures."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client.crypto.encoding import b64e
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair, ed25519_verify

RngFactory = Callable[[str], Callable[[int], bytes]]


def _raw(key: Any) -> bytes:
    return bytes(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def test_keys_come_from_the_injected_rng(make_rng: RngFactory) -> None:
    draws = make_rng("keys")
    x25519_seed, ed25519_seed, id_bytes = draws(32), draws(32), draws(16)
    device = DeviceKeyPair.generate(make_rng("keys"))
    assert device.x25519_public_key == _raw(X25519PrivateKey.from_private_bytes(x25519_seed))
    assert device.ed25519_public_key == _raw(Ed25519PrivateKey.from_private_bytes(ed25519_seed))
    assert device.device_id == uuid.UUID(bytes=id_bytes, version=4)
    identity = IdentityKeyPair.generate(lambda n: b"\x01" * n)
    assert identity.public_key == _raw(Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))


def test_device_id_is_a_version_4_uuid(make_rng: RngFactory) -> None:
    for seed in ("a", "b", "c"):
        device_id = DeviceKeyPair.generate(make_rng(seed)).device_id
        assert device_id.version == 4 and device_id.variant == uuid.RFC_4122
    assert DeviceKeyPair.generate(lambda n: b"\xff" * n).device_id.version == 4


def test_public_keys_are_32_raw_bytes_and_distinct() -> None:
    device = DeviceKeyPair.generate()
    assert len(device.x25519_public_key) == len(device.ed25519_public_key) == 32
    assert device.x25519_public_key != device.ed25519_public_key
    assert len(IdentityKeyPair.generate().public_key) == 32


def test_a_short_read_from_the_rng_is_refused() -> None:
    with pytest.raises(ValueError):
        IdentityKeyPair.generate(lambda n: bytes(n - 1))


def test_private_dicts_round_trip() -> None:
    device, identity = DeviceKeyPair.generate(), IdentityKeyPair.generate()
    device_again = DeviceKeyPair.from_private_dict(device.to_private_dict())
    assert (device_again.device_id, device_again.x25519_public_key, device_again.ed25519_public_key) == (
        device.device_id,
        device.x25519_public_key,
        device.ed25519_public_key,
    )
    assert IdentityKeyPair.from_private_dict(identity.to_private_dict()).public_key == identity.public_key


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "not-a-uuid"},
        {"device_id": None},
        {"x25519_private_key": b64e(bytes(31))},
        {"ed25519_private_key": "AAAA"},
        {"ed25519_private_key": None},
    ],
)
def test_malformed_private_dicts_are_refused(change: dict[str, Any]) -> None:
    data: dict[str, Any] = {**DeviceKeyPair.generate().to_private_dict(), **change}
    with pytest.raises(ValueError):
        DeviceKeyPair.from_private_dict(data)


def test_repr_shows_no_private_key() -> None:
    device, identity = DeviceKeyPair.generate(), IdentityKeyPair.generate()
    text = repr(device) + repr(identity) + str(device) + str(identity)
    for secret in [*device.to_private_dict().values(), *identity.to_private_dict().values()]:
        if secret != str(device.device_id):
            assert secret not in text
    assert b64e(device.ed25519_public_key) in text


def test_signatures_verify_only_for_their_message_and_key() -> None:
    identity, device = IdentityKeyPair.generate(), DeviceKeyPair.generate()
    signature = identity.sign(b"message")
    assert ed25519_verify(identity.public_key, signature, b"message")
    assert not ed25519_verify(identity.public_key, signature, b"messagE")
    assert not ed25519_verify(device.ed25519_public_key, signature, b"message")
    assert ed25519_verify(device.ed25519_public_key, device.sign(b"m"), b"m")


@pytest.mark.parametrize(
    ("public_key", "signature", "message"),
    [(b"", bytes(64), b""), (bytes(32), bytes(63), b""), (None, bytes(64), b""), (bytes(32), "sig", b"")],
)
def test_ed25519_verify_returns_false_on_malformed_input(public_key: Any, signature: Any, message: Any) -> None:
    assert ed25519_verify(public_key, signature, message) is False
