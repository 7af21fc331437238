"""Short device fingerprints, for a person comparing two screens (docs/protocol.md §2.6)."""

from __future__ import annotations

import hashlib

_LABEL = b"e2ee-msg/v1/device-fingerprint"


def device_fingerprint(x25519_public_key: bytes, ed25519_public_key: bytes) -> str:
    """80 bits of SHA-256 over both public keys, as five groups of four hex digits."""
    digest = hashlib.sha256(_LABEL + x25519_public_key + ed25519_public_key).hexdigest()[:20]
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


FINGERPRINT_BYTES = 10


def device_fingerprint_bytes(x25519_public_key: bytes, ed25519_public_key: bytes) -> bytes:
    """The 10 bytes `device_fingerprint` shows (carried raw in a link code, 2.10)."""
    return hashlib.sha256(_LABEL + x25519_public_key + ed25519_public_key).digest()[:FINGERPRINT_BYTES]
