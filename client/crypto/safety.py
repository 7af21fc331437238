"""Safety numbers (docs/protocol.md 2.4), after Signal's numeric fingerprints.

5200 iterations of SHA-512 make a targeted search for a colliding identity key costly; the
digits are compared by people, out of band, to rule out a server in the middle.
"""

from __future__ import annotations

import hashlib

from client.crypto.encoding import u16
from client.crypto.keys import KEY_BYTES

FINGERPRINT_VERSION = 0
ITERATIONS = 5200
CHUNKS = 6  # 6 chunks of 5 digits = 30 digits, from the first 30 bytes of the digest
CHUNK_BYTES = 5
SAFETY_NUMBER_DIGITS = 2 * CHUNKS * 5


def fingerprint(username: str, identity_public_key: bytes) -> str:
    """The 30-digit fingerprint of one account."""
    if len(identity_public_key) != KEY_BYTES:
        raise ValueError(f"an identity key is {KEY_BYTES} bytes")
    digest = hashlib.sha512(u16(FINGERPRINT_VERSION) + identity_public_key + username.encode("utf-8")).digest()
    for _ in range(ITERATIONS - 1):
        digest = hashlib.sha512(digest + identity_public_key).digest()
    return "".join(
        f"{int.from_bytes(digest[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES], 'big') % 100000:05d}" for i in range(CHUNKS)
    )


def safety_number(username_a: str, key_a: bytes, username_b: str, key_b: bytes) -> str:
    """60 digits: both fingerprints, the numerically smaller first, so both sides agree."""
    # Equal-length zero-padded decimal strings order numerically and lexicographically alike.
    first, second = sorted((fingerprint(username_a, key_a), fingerprint(username_b, key_b)))
    return first + second


def format_safety_number(number: str) -> str:
    """`"12345 67890 ..."`: 12 groups of 5 digits, for reading aloud."""
    if len(number) != SAFETY_NUMBER_DIGITS or not number.isascii() or not number.isdigit():
        raise ValueError(f"a safety number is {SAFETY_NUMBER_DIGITS} digits")
    return " ".join(number[i : i + 5] for i in range(0, SAFETY_NUMBER_DIGITS, 5))
