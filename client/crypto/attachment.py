"""Attachment encryption (docs/protocol.md 2.7): chunked AES-256-GCM in the STREAM construction.

A file is encrypted under a fresh random 32-byte `file_key` in fixed-size chunks, so neither side
ever holds more than one chunk; each chunk's nonce binds its index and whether it is the last one
(Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance", 2015), so chunks cannot be reordered, dropped, duplicated or truncated, and
nothing can be appended after the final chunk:

    okm          = HKDF-SHA256(IKM = file_key, salt = "", info = "e2ee-msg/v1/attachment-key", L = 39)
    stream_key   = okm[0:32]
    nonce_prefix = okm[32:39]                                                       (7 bytes)
    nonce(i, f)  = nonce_prefix || u32(i) || u8(f)          f = 1 for the final chunk, else 0
    chunk_ct(i)  = AES-256-GCM(stream_key, nonce(i, f), plaintext chunk i, aad = "e2ee-msg/v1/attachment-chunk")
    ciphertext   = chunk_ct(0) || chunk_ct(1) || ... || chunk_ct(n - 1)
    digest       = SHA-256(ciphertext)

Plaintext chunks are `CHUNK_BYTES` (65,536) long except the final one (0 to 65,536 bytes; it is
empty only for an empty file), so there are max(1, ceil(size / 65536)) chunks and each ciphertext
chunk is 16 bytes longer than its plaintext. Pure: no I/O; randomness is injected.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.labels import ATTACHMENT_AAD, ATTACHMENT_KEY_LABEL
from client.crypto.symmetric import GCM_TAG_BYTES, aes256gcm_open, aes256gcm_seal, hkdf_sha256

CHUNK_BYTES = 65536
CIPHERTEXT_CHUNK_BYTES = CHUNK_BYTES + GCM_TAG_BYTES
FILE_KEY_BYTES = 32
DIGEST_BYTES = 32
_NONCE_PREFIX_BYTES = 7
MAX_CHUNKS = 2**32  # the u32 counter


def attachment_key_generate(rng: Callable[[int], bytes]) -> bytes:
    key = rng(FILE_KEY_BYTES)
    if len(key) != FILE_KEY_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    return key


def attachment_chunk_count(size: int) -> int:
    if size < 0:
        raise ValueError("size must be >= 0")
    return max(1, -(-size // CHUNK_BYTES))


def attachment_ciphertext_length(size: int) -> int:
    """The length of the encrypted blob of a `size`-byte file (what the upload declares)."""
    return size + GCM_TAG_BYTES * attachment_chunk_count(size)


def _derive(file_key: bytes) -> tuple[bytes, bytes]:
    if len(file_key) != FILE_KEY_BYTES:
        raise ValueError(f"an attachment key is {FILE_KEY_BYTES} bytes, got {len(file_key)}")
    okm = hkdf_sha256(file_key, b"", ATTACHMENT_KEY_LABEL, FILE_KEY_BYTES + _NONCE_PREFIX_BYTES)
    return okm[:FILE_KEY_BYTES], okm[FILE_KEY_BYTES:]


def attachment_nonce(prefix: bytes, index: int, *, final: bool) -> bytes:
    if not 0 <= index < MAX_CHUNKS:
        raise ValueError("too many chunks")
    return prefix + struct.pack(">IB", index, 1 if final else 0)


class AttachmentEncryptor:
    """Feed plaintext with `update` (any sizes), then `finalize`; concatenating every returned
    piece gives the ciphertext, and `digest` (after `finalize`) its SHA-256."""

    def __init__(self, file_key: bytes) -> None:
        self._key, self._prefix = _derive(file_key)
        self._buffer = bytearray()
        self._index = 0
        self._hash = hashlib.sha256()
        self._digest: bytes | None = None
        self.plaintext_bytes = 0

    def _seal(self, chunk: bytes, *, final: bool) -> bytes:
        sealed = aes256gcm_seal(
            self._key, attachment_nonce(self._prefix, self._index, final=final), chunk, ATTACHMENT_AAD
        )
        self._index += 1
        self._hash.update(sealed)
        return sealed

    def update(self, data: bytes) -> bytes:
        if self._digest is not None:
            raise ValueError("the encryptor is finalized")
        self.plaintext_bytes += len(data)
        self._buffer += data
        out: list[bytes] = []
        # Keep at least one byte back: the chunk that turns out to be the last must be sealed final.
        while len(self._buffer) > CHUNK_BYTES:
            out.append(self._seal(bytes(self._buffer[:CHUNK_BYTES]), final=False))
            del self._buffer[:CHUNK_BYTES]
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._digest is not None:
            raise ValueError("the encryptor is finalized")
        last = self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()
        self._digest = self._hash.digest()
        return last

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            raise ValueError("finalize first")
        return self._digest


class AttachmentDecryptor:
    """Feed ciphertext with `update`, then `finalize`. Every failure is `DecryptError(TAMPERED)`;
    output returned before a failure must be discarded by the caller (write to a temporary file
    and keep it only after `finalize` succeeded and `digest` matched)."""

    def __init__(self, file_key: bytes) -> None:
        self._key, self._prefix = _derive(file_key)
        self._buffer = bytearray()
        self._index = 0
        self._hash = hashlib.sha256()
        self._done = False
        self.plaintext_bytes = 0

    def _open(self, chunk: bytes, *, final: bool) -> bytes:
        try:
            plain = aes256gcm_open(
                self._key, attachment_nonce(self._prefix, self._index, final=final), chunk, ATTACHMENT_AAD
            )
        except (InvalidTag, ValueError):
            kind = "final " if final else ""
            raise DecryptError(
                DecryptFailure.TAMPERED, f"attachment {kind}chunk {self._index} does not authenticate"
            ) from None
        self._index += 1
        self.plaintext_bytes += len(plain)
        return plain

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise ValueError("the decryptor is finalized")
        self._hash.update(data)
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) > CIPHERTEXT_CHUNK_BYTES:
            out.append(self._open(bytes(self._buffer[:CIPHERTEXT_CHUNK_BYTES]), final=False))
            del self._buffer[:CIPHERTEXT_CHUNK_BYTES]
        return b"".join(out)

    def finalize(self) -> bytes:
        """The last chunk's plaintext. A stream that stops before its final chunk (truncation), or
        whose final chunk is followed by more (an appended chunk), fails here."""
        if self._done:
            raise ValueError("the decryptor is finalized")
        self._done = True
        if len(self._buffer) < GCM_TAG_BYTES:
            raise DecryptError(DecryptFailure.TAMPERED, "the attachment ends inside a chunk")
        return self._open(bytes(self._buffer), final=True)

    @property
    def digest(self) -> bytes:
        """SHA-256 of every ciphertext byte fed so far."""
        return self._hash.digest()


def attachment_encrypt(file_key: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """One-shot form (small files, tests, the known-answer vector): `(ciphertext, digest)`."""
    encryptor = AttachmentEncryptor(file_key)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return ciphertext, encryptor.digest


def attachment_decrypt(file_key: bytes, ciphertext: bytes, *, digest: bytes | None = None) -> bytes:
    """One-shot form; checks the SHA-256 `digest` of the ciphertext first when given."""
    if digest is not None and hashlib.sha256(ciphertext).digest() != digest:
        raise DecryptError(DecryptFailure.TAMPERED, "the attachment's digest does not match")
    decryptor = AttachmentDecryptor(file_key)
    return decryptor.update(ciphertext) + decryptor.finalize()
