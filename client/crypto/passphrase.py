"""Passphrase sealing of the local key store (docs/protocol.md 2.5). Pure: the caller does I/O.

Document:
    {"format": "e2ee-msg-keystore", "version": 1,
     "kdf": {"name": "scrypt", "n": N, "r": R, "p": P, "salt": b64(16)},
     "nonce": b64(12), "ciphertext": b64(AES-256-GCM(scrypt key, nonce, plaintext, aad=label))}

The KDF parameters are not in the AAD, but they need not be: changing any of them changes the
derived key, so a modified document fails to open like any other tampering.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from client.crypto.encoding import b64d, b64e
from client.crypto.errors import KeystoreError
from client.crypto.keys import Rng, random_bytes
from client.crypto.labels import KEYSTORE_AAD
from client.crypto.symmetric import AES256_KEY_BYTES, GCM_NONCE_BYTES, GCM_TAG_BYTES, aes256gcm_open, aes256gcm_seal

FORMAT = "e2ee-msg-keystore"
VERSION = 1
SALT_BYTES = 16
# Upper bounds for parameters read from a file: a crafted document must not make us allocate
# many GiB (scrypt needs 128 * r * n bytes) or spin for minutes before failing.
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
MAX_MEMORY_BYTES = 2**30

_DOCUMENT_KEYS = {"format", "version", "kdf", "nonce", "ciphertext"}
_KDF_KEYS = {"name", "n", "r", "p", "salt"}


def scrypt_parameters_problem(n: object, r: object, p: object) -> str | None:
    """Why (n, r, p) is not acceptable, or None if it is."""
    # `type(...) is int`, not isinstance: JSON true/false load as bools, which are ints.
    if type(n) is not int or type(r) is not int or type(p) is not int:
        return "scrypt n, r and p must be integers"
    if n < 2 or n > MAX_N or n & (n - 1):
        return f"scrypt n must be a power of 2 between 2 and {MAX_N}"
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        return f"scrypt r must be 1..{MAX_R} and p 1..{MAX_P}"
    if 128 * r * n > MAX_MEMORY_BYTES:
        return "scrypt parameters need more than 1 GiB of memory"
    return None


def _derive_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=AES256_KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def seal_with_passphrase(
    passphrase: str, plaintext: bytes, *, rng: Rng = os.urandom, n: int = 32768, r: int = 8, p: int = 1
) -> dict[str, Any]:
    """Encrypt `plaintext` under a passphrase; returns the JSON-ready document.

    Draws rng(16) for the salt, then rng(12) for the nonce. Raises ValueError for bad parameters.
    """
    problem = scrypt_parameters_problem(n, r, p)
    if problem:
        raise ValueError(problem)
    salt = random_bytes(rng, SALT_BYTES)
    nonce = random_bytes(rng, GCM_NONCE_BYTES)
    ciphertext = aes256gcm_seal(_derive_key(passphrase, salt, n, r, p), nonce, plaintext, KEYSTORE_AAD)
    return {
        "format": FORMAT,
        "version": VERSION,
        "kdf": {"name": "scrypt", "n": n, "r": r, "p": p, "salt": b64e(salt)},
        "nonce": b64e(nonce),
        "ciphertext": b64e(ciphertext),
    }


def _parse_document(document: object) -> tuple[bytes, int, int, int, bytes, bytes]:
    """(salt, n, r, p, nonce, ciphertext) of a well-formed document; KeystoreError otherwise."""
    if not isinstance(document, Mapping) or set(document) != _DOCUMENT_KEYS:
        raise KeystoreError("not a key store document")
    if document["format"] != FORMAT:
        raise KeystoreError("not a key store document")
    if type(document["version"]) is not int or document["version"] != VERSION:
        raise KeystoreError(f"unsupported key store version {document['version']!r}")
    kdf = document["kdf"]
    if not isinstance(kdf, Mapping) or set(kdf) != _KDF_KEYS or kdf["name"] != "scrypt":
        raise KeystoreError("unsupported key derivation")
    problem = scrypt_parameters_problem(kdf["n"], kdf["r"], kdf["p"])
    if problem:
        raise KeystoreError(problem)
    try:
        salt = b64d(kdf["salt"], length=SALT_BYTES)
        nonce = b64d(document["nonce"], length=GCM_NONCE_BYTES)
        ciphertext = b64d(document["ciphertext"])
    except ValueError as exc:
        raise KeystoreError(f"malformed key store: {exc}") from None
    if len(ciphertext) < GCM_TAG_BYTES:
        raise KeystoreError("malformed key store: ciphertext too short")
    return salt, kdf["n"], kdf["r"], kdf["p"], nonce, ciphertext


def open_with_passphrase(document: Mapping[str, Any], passphrase: str) -> bytes:
    """Decrypt a document made by `seal_with_passphrase`.

    Raises KeystoreError for a wrong passphrase, a modified document or a malformed one (the
    first two cannot be told apart, by design of an AEAD).
    """
    salt, n, r, p, nonce, ciphertext = _parse_document(document)
    try:
        return aes256gcm_open(_derive_key(passphrase, salt, n, r, p), nonce, ciphertext, KEYSTORE_AAD)
    except InvalidTag:
        raise KeystoreError("wrong passphrase, or the key store was modified") from None
