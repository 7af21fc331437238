"""Account identity keys and device keys (docs/protocol.md 1).

Keys are created from injected randomness (`rng(n) -> n bytes`) through `from_private_bytes`, so
tests can make them deterministic and the crypto core never reaches for a global source itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from client.crypto.encoding import b64d, b64e

Rng = Callable[[int], bytes]

KEY_BYTES = 32
SIGNATURE_BYTES = 64


def random_bytes(rng: Rng, size: int) -> bytes:
    """`rng(size)`, checked: a short read from an injected source must not silently weaken keys."""
    data = rng(size)
    if not isinstance(data, bytes) or len(data) != size:
        raise ValueError(f"rng must return exactly {size} bytes")
    return data


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message` under raw `public_key`.

    Never raises on malformed input: wrong lengths, non-bytes or an invalid point are just False,
    so callers cannot turn a parsing error into an accidental accept or an unhandled crash.
    """
    if not (isinstance(public_key, bytes) and isinstance(signature, bytes) and isinstance(message, bytes)):
        return False
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _private_field(data: Mapping[str, Any], name: str) -> bytes:
    if not isinstance(data, Mapping) or name not in data:
        raise ValueError(f"missing {name!r}")
    return b64d(data[name], length=KEY_BYTES)


# eq=False: the private key objects have no value equality, and comparing secrets is not a use
# case. repr=False: a dataclass repr would print key objects; ours shows public keys only.
@dataclass(frozen=True, eq=False, repr=False)
class IdentityKeyPair:
    """The account identity key (Ed25519); it signs device vouches (2.1)."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> IdentityKeyPair:
        return cls(Ed25519PrivateKey.from_private_bytes(random_bytes(rng, KEY_BYTES)))

    @property
    def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return _raw_public(self.private_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def to_private_dict(self) -> dict[str, str]:
        return {"ed25519_private_key": b64e(_raw_private(self.private_key))}

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key: only ever sealed to another device of the account (2.12)."""
        return _raw_private(self.private_key)

    @classmethod
    def from_private_dict(cls, data: Mapping[str, Any]) -> IdentityKeyPair:
        """Inverse of `to_private_dict`; raises ValueError on a malformed dict."""
        return cls(Ed25519PrivateKey.from_private_bytes(_private_field(data, "ed25519_private_key")))

    def __repr__(self) -> str:
        return f"IdentityKeyPair(public_key={b64e(self.public_key)!r})"


@dataclass(frozen=True, eq=False, repr=False)
class DeviceKeyPair:
    """One device: its id, X25519 agreement key (HPKE recipient) and Ed25519 signing key."""

    device_id: uuid.UUID
    x25519_private_key: X25519PrivateKey
    ed25519_private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> DeviceKeyPair:
        """Draws rng(32) for X25519, rng(32) for Ed25519, then rng(16) for the UUIDv4 device id."""
        x25519 = X25519PrivateKey.from_private_bytes(random_bytes(rng, KEY_BYTES))
        ed25519 = Ed25519PrivateKey.from_private_bytes(random_bytes(rng, KEY_BYTES))
        device_id = uuid.UUID(bytes=random_bytes(rng, 16), version=4)
        return cls(device_id, x25519, ed25519)

    @property
    def x25519_public_key(self) -> bytes:
        return _raw_public(self.x25519_private_key)

    @property
    def ed25519_public_key(self) -> bytes:
        return _raw_public(self.ed25519_private_key)

    def sign(self, message: bytes) -> bytes:
        """Sign with the device signing key (wrapped keys 2.2, messages 2.3)."""
        return self.ed25519_private_key.sign(message)

    def to_private_dict(self) -> dict[str, str]:
        return {
            "device_id": str(self.device_id),
            "x25519_private_key": b64e(_raw_private(self.x25519_private_key)),
            "ed25519_private_key": b64e(_raw_private(self.ed25519_private_key)),
        }

    @classmethod
    def from_private_dict(cls, data: Mapping[str, Any]) -> DeviceKeyPair:
        """Inverse of `to_private_dict`; raises ValueError on a malformed dict."""
        x25519 = X25519PrivateKey.from_private_bytes(_private_field(data, "x25519_private_key"))
        ed25519 = Ed25519PrivateKey.from_private_bytes(_private_field(data, "ed25519_private_key"))
        device_id = data.get("device_id")
        if not isinstance(device_id, str):
            raise ValueError("missing 'device_id'")
        return cls(uuid.UUID(device_id), x25519, ed25519)

    def __repr__(self) -> str:
        return (
            f"DeviceKeyPair(device_id={str(self.device_id)!r}, "
            f"x25519_public_key={b64e(self.x25519_public_key)!r}, "
            f"ed25519_public_key={b64e(self.ed25519_public_key)!r})"
        )
