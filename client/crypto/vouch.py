"""Device vouches (docs/protocol.md 2.1): the account identity key signs each device's keys."""

from __future__ import annotations

import uuid

from client.crypto.encoding import str16, uuid_bytes
from client.crypto.keys import KEY_BYTES, DeviceKeyPair, IdentityKeyPair, ed25519_verify
from client.crypto.labels import VOUCH_LABEL


def vouch_message(*, username: str, device_id: uuid.UUID, x25519_public_key: bytes, ed25519_public_key: bytes) -> bytes:
    """`label || str16(username) || uuid(device_id) || x25519 (32) || ed25519 (32)`.

    Raises ValueError on a wrong key length: with fixed-length keys the encoding is injective,
    so a signature over one (username, device, keys) tuple can never be read as another.
    """
    for name, key in (("x25519_public_key", x25519_public_key), ("ed25519_public_key", ed25519_public_key)):
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"{name} must be {KEY_BYTES} bytes")
    return VOUCH_LABEL + str16(username) + uuid_bytes(device_id) + x25519_public_key + ed25519_public_key


def vouch_sign(identity: IdentityKeyPair, device: DeviceKeyPair, username: str) -> bytes:
    """The identity key's 64-byte vouch for `device` of account `username`."""
    return identity.sign(
        vouch_message(
            username=username,
            device_id=device.device_id,
            x25519_public_key=device.x25519_public_key,
            ed25519_public_key=device.ed25519_public_key,
        )
    )


def vouch_verify(
    *,
    identity_public_key: bytes,
    signature: bytes,
    username: str,
    device_id: uuid.UUID,
    x25519_public_key: bytes,
    ed25519_public_key: bytes,
) -> bool:
    """True iff `signature` vouches for exactly these device keys; False (never an exception)
    for any malformed input, because the inputs come from the server and are untrusted."""
    try:
        message = vouch_message(
            username=username,
            device_id=device_id,
            x25519_public_key=x25519_public_key,
            ed25519_public_key=ed25519_public_key,
        )
    except (ValueError, TypeError, AttributeError):
        return False
    return ed25519_verify(identity_public_key, signature, message)
