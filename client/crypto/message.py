"""Message encryption (docs/protocol.md 2.3): building blocks for the SDK's receive pipeline.

The SDK performs the receive checks in the order of 2.3 (version, vouch, signature, epoch, AEAD,
replay); this module gives it one function per cryptographic step, each failing with a typed reason
or a boolean, never with a library exception.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from client.crypto.encoding import u8, u32, uuid_bytes
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair, Rng, ed25519_verify, random_bytes
from client.crypto.labels import MESSAGE_KEY_LABEL, MESSAGE_SIG_LABEL, PROTOCOL_VERSION
from client.crypto.lists_seen import lists_seen_hash
from client.crypto.symmetric import GCM_NONCE_BYTES, aes256gcm_open, aes256gcm_seal, hkdf_sha256
from client.crypto.wrap import CHAT_KEY_BYTES, MAX_EPOCH

HEADER_BYTES = 85
CLIENT_MESSAGE_ID_BYTES = 16
PAD_BLOCK = 64
_CLIENT_MESSAGE_ID_AT = 37  # after version (1), conversation (16), epoch (4) and sender device (16)
_PAD_MARKER = b"\x80"


@dataclass(frozen=True)
class SealedMessage:
    """The sender's half of an envelope (the server adds seq, sender username and time)."""

    version: int
    epoch: int
    client_message_id: bytes  # 16 bytes, also the send's idempotency key
    nonce: bytes  # 12 bytes
    ciphertext: bytes  # padded payload encrypted, with the 16-byte tag
    signature: bytes  # 64 bytes, by the sender device's signing key
    device_lists: bytes  # the device lists the sender saw (2.19), bound by the header's hash


def message_header(
    *,
    conversation_id: uuid.UUID,
    epoch: int,
    sender_device_id: uuid.UUID,
    client_message_id: bytes,
    device_lists: bytes,
) -> bytes:
    """`u8(1) || uuid(conversation) || u32(epoch) || uuid(sender device) || client_message_id
    || device_lists_hash` (85 bytes), the hash being over the encoded device lists seen (2.19).

    Raises ValueError if a field cannot be encoded (epoch outside u32, id not 16 bytes).
    """
    if not isinstance(client_message_id, bytes) or len(client_message_id) != CLIENT_MESSAGE_ID_BYTES:
        raise ValueError(f"client_message_id must be {CLIENT_MESSAGE_ID_BYTES} bytes")
    return (
        u8(PROTOCOL_VERSION)
        + uuid_bytes(conversation_id)
        + u32(epoch)
        + uuid_bytes(sender_device_id)
        + client_message_id
        + lists_seen_hash(device_lists)
    )


def pad(payload: bytes) -> bytes:
    """`payload || 0x80 || 0x00 * k`, smallest k making the length a multiple of 64.

    Hides the exact length from the server: it learns only the 64-byte bucket.
    """
    k = -(len(payload) + 1) % PAD_BLOCK
    return payload + _PAD_MARKER + b"\x00" * k


def unpad(padded: bytes) -> bytes:
    """Inverse of `pad`; raises DecryptError(TAMPERED) unless `padded` is exactly what `pad` makes.

    Strict on purpose: the length must be a non-zero multiple of 64 and the padding (0x80 plus
    zeros) at most 64 bytes, so that each plaintext has one valid encoding.
    """
    if not padded or len(padded) % PAD_BLOCK:
        raise DecryptError(DecryptFailure.TAMPERED, "padded payload length is not a multiple of 64")
    stripped = padded.rstrip(b"\x00")
    if not stripped.endswith(_PAD_MARKER):
        raise DecryptError(DecryptFailure.TAMPERED, "padding has no 0x80 marker")
    payload = stripped[:-1]
    if len(padded) - len(payload) > PAD_BLOCK:
        raise DecryptError(DecryptFailure.TAMPERED, "padding is longer than one block")
    return payload


def message_key(chat_key: bytes, header: bytes) -> bytes:
    """Per-message AES-256 key: HKDF-SHA256(ChatKey, salt=client_message_id, info=label||header)."""
    if len(chat_key) != CHAT_KEY_BYTES:
        raise ValueError(f"a ChatKey is {CHAT_KEY_BYTES} bytes")
    client_message_id = header[_CLIENT_MESSAGE_ID_AT : _CLIENT_MESSAGE_ID_AT + CLIENT_MESSAGE_ID_BYTES]
    return hkdf_sha256(chat_key, client_message_id, MESSAGE_KEY_LABEL + header, 32)


def _signed_bytes(header: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return MESSAGE_SIG_LABEL + header + nonce + ciphertext


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, compact, UTF-8 (not \\u escapes), no NaN/Infinity."""
    if not isinstance(payload, dict):
        raise TypeError("a payload is a JSON object (dict)")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def message_encrypt(
    *,
    chat_key: bytes,
    conversation_id: uuid.UUID,
    epoch: int,
    sender: DeviceKeyPair,
    payload: dict[str, Any],
    device_lists: bytes,
    client_message_id: bytes | None = None,
    rng: Rng = os.urandom,
) -> SealedMessage:
    """Encrypt and sign one payload; `device_lists` is the encoding of the device lists the
    sender saw (2.19). Draws rng(16) for the client_message_id (unless given; a retry of the same
    send must reuse it) and then rng(12) for the nonce."""
    if not 1 <= epoch <= MAX_EPOCH:
        raise ValueError("epochs are numbered from 1")
    if client_message_id is None:
        client_message_id = random_bytes(rng, CLIENT_MESSAGE_ID_BYTES)
    header = message_header(
        conversation_id=conversation_id,
        epoch=epoch,
        sender_device_id=sender.device_id,
        client_message_id=client_message_id,
        device_lists=device_lists,
    )
    padded = pad(encode_payload(payload))
    nonce = random_bytes(rng, GCM_NONCE_BYTES)
    ciphertext = aes256gcm_seal(message_key(chat_key, header), nonce, padded, header)
    signature = sender.sign(_signed_bytes(header, nonce, ciphertext))
    return SealedMessage(
        version=PROTOCOL_VERSION,
        epoch=epoch,
        client_message_id=client_message_id,
        nonce=nonce,
        ciphertext=ciphertext,
        signature=signature,
        device_lists=device_lists,
    )


def message_signature_verify(
    *, header: bytes, nonce: bytes, ciphertext: bytes, signature: bytes, sender_ed25519_public_key: bytes
) -> bool:
    """True iff the sender device signed `label || header || nonce || ciphertext`.

    The header and nonce must have their fixed lengths: otherwise bytes could be shifted between
    the nonce and the ciphertext without changing the signed string.
    """
    if len(header) != HEADER_BYTES or len(nonce) != GCM_NONCE_BYTES:
        return False
    return ed25519_verify(sender_ed25519_public_key, signature, _signed_bytes(header, nonce, ciphertext))


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a duplicated key; refuse the ambiguity.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in payload")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_payload(data: bytes) -> dict[str, Any]:
    """Parse a payload strictly (UTF-8, one JSON object, no duplicate keys); ValueError otherwise."""
    value = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    if not isinstance(value, dict):
        raise ValueError("payload is not a JSON object")
    return value


def message_open(*, chat_key: bytes, header: bytes, nonce: bytes, ciphertext: bytes) -> dict[str, Any]:
    """AES-GCM open with the header as AAD, unpad, parse. Any failure is DecryptError(TAMPERED).

    A `chat_key` that is not 32 bytes is a local bug, not a property of the envelope, and raises
    ValueError instead.
    """
    if len(chat_key) != CHAT_KEY_BYTES:
        raise ValueError(f"a ChatKey is {CHAT_KEY_BYTES} bytes")
    if len(header) != HEADER_BYTES or len(nonce) != GCM_NONCE_BYTES:
        raise DecryptError(DecryptFailure.TAMPERED, "header or nonce has the wrong length")
    try:
        padded = aes256gcm_open(message_key(chat_key, header), nonce, ciphertext, header)
    except InvalidTag:
        raise DecryptError(DecryptFailure.TAMPERED, "the ciphertext does not authenticate") from None
    payload = unpad(padded)
    try:
        return decode_payload(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DecryptError(DecryptFailure.TAMPERED, "the payload is not a valid JSON object") from None
