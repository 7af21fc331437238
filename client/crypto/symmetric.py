"""The symmetric primitives of the protocol, each used in exactly one way.

Message encryption (2.3) and the key store (2.5) go through these functions, and the external
test vectors (Wycheproof) go through the same functions, so the vectors test our usage, not
merely the library.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AES256_KEY_BYTES = 32
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869); an empty salt means "no salt" (HashLen zero bytes).

    Raises ValueError if `length` exceeds 255 * 32 bytes.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _check_key_and_nonce(key: bytes, nonce: bytes) -> None:
    # AESGCM also accepts 128/192-bit keys and 8..128-byte nonces; the protocol allows only
    # AES-256 with 96-bit nonces, so anything else is a caller bug or a forged field.
    if len(key) != AES256_KEY_BYTES:
        raise ValueError(f"AES-256-GCM key must be {AES256_KEY_BYTES} bytes, got {len(key)}")
    if len(nonce) != GCM_NONCE_BYTES:
        raise ValueError(f"AES-GCM nonce must be {GCM_NONCE_BYTES} bytes, got {len(nonce)}")


def aes256gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption; returns ciphertext || 16-byte tag."""
    _check_key_and_nonce(key, nonce)
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256gcm_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decryption of ciphertext || tag.

    Raises `cryptography.exceptions.InvalidTag` if authentication fails and ValueError if the
    key or nonce has the wrong length.
    """
    _check_key_and_nonce(key, nonce)
    return AESGCM(key).decrypt(nonce, ciphertext, aad)
