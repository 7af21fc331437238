"""Linking a new device (docs/protocol.md 2.10 to 2.12): the link code, the keys derived from
its one-time secret, the approval MAC, and the account identity key wrapped to the new device.

The one-time secret travels only from the new device's screen to the approving device (typed
or scanned): the server sees a hash of a verifier derived from it (to refuse wrong codes), and
the approval's MAC, from which it can neither recover the secret nor forge another MAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from client.crypto.encoding import str16, u8, uuid_bytes
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.fingerprint import FINGERPRINT_BYTES
from client.crypto.keys import KEY_BYTES, DeviceKeyPair, IdentityKeyPair, Rng, random_bytes
from client.crypto.labels import (
    IDENTITY_WRAP_LABEL,
    LINK_APPROVAL_LABEL,
    LINK_CODE_LABEL,
    LINK_MAC_LABEL,
    LINK_VERIFIER_LABEL,
    PROTOCOL_VERSION,
)
from client.crypto.symmetric import hkdf_sha256
from client.crypto.wrap import HPKE_SUITE

LINK_CODE_VERSION = 1
LINK_SECRET_BYTES = 16
LINK_CHECK_BYTES = 2
LINK_CODE_BYTES = 1 + 16 + FINGERPRINT_BYTES + LINK_SECRET_BYTES + LINK_CHECK_BYTES  # 45
MAC_BYTES = 32
WRAPPED_IDENTITY_BYTES = 32 + KEY_BYTES + 16  # HPKE enc || ciphertext || tag = 80


class LinkCodeError(ValueError):
    """The text is not a well-formed link code (typo, truncated, another version)."""


@dataclass(frozen=True)
class LinkCode:
    """What the new device shows: its id, the fingerprint of its keys, and a one-time secret."""

    device_id: uuid.UUID
    fingerprint: bytes  # 10 bytes (2.6)
    secret: bytes  # 16 bytes

    @classmethod
    def generate(cls, *, device_id: uuid.UUID, fingerprint: bytes, rng: Rng = os.urandom) -> LinkCode:
        return cls(device_id, fingerprint, random_bytes(rng, LINK_SECRET_BYTES))


def link_code_encode(code: LinkCode) -> str:
    """The code as 72 base32 characters in groups of four: `ABCD-EFGH-...`."""
    if len(code.fingerprint) != FINGERPRINT_BYTES or len(code.secret) != LINK_SECRET_BYTES:
        raise ValueError("a link code holds a 10-byte fingerprint and a 16-byte secret")
    payload = u8(LINK_CODE_VERSION) + uuid_bytes(code.device_id) + code.fingerprint + code.secret
    check = hashlib.sha256(LINK_CODE_LABEL + payload).digest()[:LINK_CHECK_BYTES]
    text = base64.b32encode(payload + check).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def link_code_decode(text: str) -> LinkCode:
    """Parse a typed or scanned code; case, spaces and dashes do not matter. Raises LinkCodeError."""
    compact = "".join(ch for ch in text if ch not in " -\t\n").upper()
    try:
        raw = base64.b32decode(compact)
    except (binascii.Error, ValueError):
        raise LinkCodeError("not a link code (bad characters)") from None
    if len(raw) != LINK_CODE_BYTES:
        raise LinkCodeError("not a link code (wrong length)")
    payload, check = raw[:-LINK_CHECK_BYTES], raw[-LINK_CHECK_BYTES:]
    if not hmac.compare_digest(hashlib.sha256(LINK_CODE_LABEL + payload).digest()[:LINK_CHECK_BYTES], check):
        raise LinkCodeError("the link code has a typo (its check digits do not match)")
    if payload[0] != LINK_CODE_VERSION:
        raise LinkCodeError(f"link code version {payload[0]} is not supported")
    return LinkCode(
        device_id=uuid.UUID(bytes=payload[1:17]),
        fingerprint=payload[17 : 17 + FINGERPRINT_BYTES],
        secret=payload[17 + FINGERPRINT_BYTES :],
    )


@dataclass(frozen=True, repr=False)
class LinkKeys:
    verifier: bytes  # shown to the server at approval; it stores only SHA-256(verifier)
    mac_key: bytes  # never leaves the two devices

    @property
    def verifier_hash(self) -> bytes:
        return hashlib.sha256(self.verifier).digest()


def link_keys(*, secret: bytes, device_id: uuid.UUID) -> LinkKeys:
    """The two independent keys derived from the code's secret (2.11)."""
    if len(secret) != LINK_SECRET_BYTES:
        raise ValueError("the link secret is 16 bytes")
    return LinkKeys(
        verifier=hkdf_sha256(secret, b"", LINK_VERIFIER_LABEL + uuid_bytes(device_id), 32),
        mac_key=hkdf_sha256(secret, b"", LINK_MAC_LABEL + uuid_bytes(device_id), 32),
    )


def link_approval_message(
    *,
    username: str,
    device_id: uuid.UUID,
    approver_device_id: uuid.UUID,
    identity_public_key: bytes,
    device_list_hash: bytes,
    wrapped_identity_key: bytes,
) -> bytes:
    """The bytes the approval MAC covers (2.11 `approval_message`)."""
    if len(identity_public_key) != KEY_BYTES or len(device_list_hash) != 32:
        raise ValueError("identity key and device list hash are 32 bytes")
    if len(wrapped_identity_key) != WRAPPED_IDENTITY_BYTES:
        raise ValueError(f"a wrapped identity key is {WRAPPED_IDENTITY_BYTES} bytes")
    return (
        LINK_APPROVAL_LABEL
        + u8(PROTOCOL_VERSION)
        + str16(username)
        + uuid_bytes(device_id)
        + uuid_bytes(approver_device_id)
        + identity_public_key
        + device_list_hash
        + wrapped_identity_key
    )


def link_approval_mac(mac_key: bytes, message: bytes) -> bytes:
    return hmac.new(mac_key, message, hashlib.sha256).digest()


def link_approval_verify(mac_key: bytes, message: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(link_approval_mac(mac_key, message), mac)


def identity_wrap_info(*, username: str, device_id: uuid.UUID) -> bytes:
    return IDENTITY_WRAP_LABEL + u8(PROTOCOL_VERSION) + str16(username) + uuid_bytes(device_id)


def identity_key_wrap(
    *, identity: IdentityKeyPair, username: str, device_id: uuid.UUID, recipient_x25519_public_key: bytes
) -> bytes:
    """HPKE-seal the identity private key (32 raw bytes) to the new device (2.12): 80 bytes."""
    info = identity_wrap_info(username=username, device_id=device_id)
    recipient = X25519PublicKey.from_public_bytes(recipient_x25519_public_key)
    return HPKE_SUITE.encrypt(identity.private_bytes(), recipient, info=info)


def identity_key_unwrap(*, wrapped: bytes, username: str, device: DeviceKeyPair) -> IdentityKeyPair:
    """Open a wrapped identity key with this device's X25519 key; DecryptError(TAMPERED) if not."""
    if len(wrapped) != WRAPPED_IDENTITY_BYTES:
        raise DecryptError(DecryptFailure.TAMPERED, f"a wrapped identity key is {WRAPPED_IDENTITY_BYTES} bytes")
    info = identity_wrap_info(username=username, device_id=device.device_id)
    try:
        raw = HPKE_SUITE.decrypt(wrapped, device.x25519_private_key, info=info)
    except (InvalidTag, ValueError):
        raise DecryptError(DecryptFailure.TAMPERED, "the wrapped identity key does not open for this device") from None
    if len(raw) != KEY_BYTES:
        raise DecryptError(DecryptFailure.TAMPERED, "the wrapped identity key is not 32 bytes")
    return IdentityKeyPair(Ed25519PrivateKey.from_private_bytes(raw))
