"""Attachment encryption (protocol.md 2.7): the known-answer vectors of the document, an independent
re-computation from the primitives, and the attacks on a chunked stream."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.crypto.attachment import (
    CHUNK_BYTES,
    CIPHERTEXT_CHUNK_BYTES,
    AttachmentDecryptor,
    AttachmentEncryptor,
    attachment_ciphertext_length,
    attachment_decrypt,
    attachment_encrypt,
    attachment_key_generate,
)
from client.crypto.errors import DecryptError, DecryptFailure

KEY = bytes(range(32))
# The vectors of docs/protocol.md 2.7.
EMPTY_CT = "d21bbbcc5af8710608d2bc4cb4bc292e"
EMPTY_DIGEST = "6a5926a8fdc57c4f072f1fd6f8f7eaae04fc6598440d9fc0d2e5e8f6fe2774c0"
HELLO_CT = "dab242a3e40cc289a240ed304b768197b03f1fad07f59f4a3a879a4095fb3f5dc5"
HELLO_DIGEST = "cb72243177dd75e4450f1644499ff4b51ff013693d02c66be821991de227d4ad"
TWO_CHUNK_DIGEST = "0ddd3cd3b3360c0fe8f8646580d2d49fcc86e055b839a30825afb3a3020b41cc"
TWO_CHUNK_TAG0 = "e2feb5135721bd314610623accb690c9"
TWO_CHUNK_CT1 = "aea6896ce51b6d03cb7339c8d1e74bc347f071eabd"


def _two_chunk_plaintext() -> bytes:
    return bytes(i % 256 for i in range(CHUNK_BYTES + 5))


def test_known_answer_vectors_of_the_protocol_document() -> None:
    ct, digest = attachment_encrypt(KEY, b"")
    assert (ct.hex(), digest.hex()) == (EMPTY_CT, EMPTY_DIGEST)
    ct, digest = attachment_encrypt(KEY, b"hello, attachment")
    assert (ct.hex(), digest.hex()) == (HELLO_CT, HELLO_DIGEST)
    ct, digest = attachment_encrypt(KEY, _two_chunk_plaintext())
    assert len(ct) == 65573
    assert digest.hex() == TWO_CHUNK_DIGEST
    assert ct[CHUNK_BYTES:CIPHERTEXT_CHUNK_BYTES].hex() == TWO_CHUNK_TAG0
    assert ct[CIPHERTEXT_CHUNK_BYTES:].hex() == TWO_CHUNK_CT1


def test_construction_recomputed_independently_from_the_primitives() -> None:
    """What another team would write from the document alone, with the library directly."""
    plaintext = os.urandom(3 * CHUNK_BYTES + 17)
    okm = HKDF(algorithm=hashes.SHA256(), length=39, salt=None, info=b"e2ee-msg/v1/attachment-key").derive(KEY)
    aead, prefix = AESGCM(okm[:32]), okm[32:]
    chunks = [plaintext[i : i + CHUNK_BYTES] for i in range(0, len(plaintext), CHUNK_BYTES)]
    expected = b"".join(
        aead.encrypt(prefix + struct.pack(">IB", i, i == len(chunks) - 1), chunk, b"e2ee-msg/v1/attachment-chunk")
        for i, chunk in enumerate(chunks)
    )
    ct, digest = attachment_encrypt(KEY, plaintext)
    assert ct == expected
    assert digest == hashlib.sha256(expected).digest()


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES])
def test_round_trip_and_declared_length(size: int) -> None:
    plaintext = os.urandom(size)
    ct, digest = attachment_encrypt(KEY, plaintext)
    assert len(ct) == attachment_ciphertext_length(size)
    assert attachment_decrypt(KEY, ct, digest=digest) == plaintext


def test_streaming_in_odd_pieces_equals_one_shot() -> None:
    plaintext = os.urandom(2 * CHUNK_BYTES + 999)
    encryptor = AttachmentEncryptor(KEY)
    pieces = [encryptor.update(plaintext[i : i + 7777]) for i in range(0, len(plaintext), 7777)]
    ct = b"".join(pieces) + encryptor.finalize()
    assert (ct, encryptor.digest) == attachment_encrypt(KEY, plaintext)
    decryptor = AttachmentDecryptor(KEY)
    out = b"".join(decryptor.update(ct[i : i + 5000]) for i in range(0, len(ct), 5000)) + decryptor.finalize()
    assert out == plaintext
    assert decryptor.digest == encryptor.digest


def test_key_comes_from_the_injected_rng() -> None:
    assert attachment_key_generate(lambda n: b"\x01" * n) == b"\x01" * 32


# -- attacks --------------------------------------------------------------------------------------


def _chunks() -> tuple[bytes, list[bytes]]:
    plaintext = os.urandom(3 * CHUNK_BYTES + 100)
    ct, _ = attachment_encrypt(KEY, plaintext)
    return plaintext, [ct[i : i + CIPHERTEXT_CHUNK_BYTES] for i in range(0, len(ct), CIPHERTEXT_CHUNK_BYTES)]


def _tampered(ciphertext: bytes) -> DecryptError:
    with pytest.raises(DecryptError) as caught:
        attachment_decrypt(KEY, ciphertext)
    assert caught.value.reason is DecryptFailure.TAMPERED
    return caught.value


@pytest.mark.parametrize("position", [0, 100, CIPHERTEXT_CHUNK_BYTES + 5, -1])
def test_flipped_byte_is_detected(position: int) -> None:
    _, chunks = _chunks()
    ct = bytearray(b"".join(chunks))
    ct[position] ^= 0x01
    _tampered(bytes(ct))


def test_flipped_byte_fails_the_digest_before_decryption() -> None:
    plaintext = b"x" * 1000
    ct, digest = attachment_encrypt(KEY, plaintext)
    with pytest.raises(DecryptError, match="digest"):
        attachment_decrypt(KEY, ct[:-1] + bytes([ct[-1] ^ 1]), digest=digest)


def test_dropped_chunk_is_detected() -> None:
    _, chunks = _chunks()
    _tampered(b"".join(chunks[:1] + chunks[2:]))


def test_reordered_chunks_are_detected() -> None:
    _, chunks = _chunks()
    _tampered(b"".join([chunks[1], chunks[0], *chunks[2:]]))


def test_truncation_at_a_chunk_boundary_is_detected() -> None:
    """Dropping the final chunk leaves a stream of whole, authentic chunks: only the final flag
    in the nonce catches it."""
    _, chunks = _chunks()
    error = _tampered(b"".join(chunks[:-1]))
    assert "final" in str(error)


def test_truncation_inside_a_chunk_is_detected() -> None:
    _, chunks = _chunks()
    _tampered(b"".join(chunks)[:-7])
    _tampered(b"".join(chunks)[:5])


def test_chunk_appended_after_the_final_one_is_detected() -> None:
    _, chunks = _chunks()
    _tampered(b"".join([*chunks, chunks[0]]))
    # Another file's final chunk appended is no better.
    other, _ = attachment_encrypt(KEY, b"tail")
    _tampered(b"".join(chunks) + other)


def test_wrong_key_is_detected() -> None:
    _, chunks = _chunks()
    with pytest.raises(DecryptError):
        attachment_decrypt(bytes(32), b"".join(chunks))
