"""ChatKey wrapping with HPKE base mode (docs/protocol.md 2.2).

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, empty AAD, single shot, through
`cryptography.hazmat.primitives.hpke` (whose public API is exactly that: base mode, no AAD).
The HPKE ephemeral key is drawn inside OpenSSL, so it is the one piece of randomness here that
is not injected; it never leaves the call.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from client.crypto.encoding import u8, u32, uuid_bytes
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import KEY_BYTES, DeviceKeyPair, Rng, ed25519_verify, random_bytes
from client.crypto.labels import CHATKEY_WRAP_LABEL, CHATKEY_WRAP_SIG_LABEL, PROTOCOL_VERSION

CHAT_KEY_BYTES = 32
HPKE_ENC_BYTES = 32
WRAPPED_KEY_BYTES = HPKE_ENC_BYTES + CHAT_KEY_BYTES + 16  # enc || ct || tag = 80
# Encoded as u32 on the wire, but bounded by what the server stores (31 bits, common/protocol.py):
# one limit on both sides, so no epoch the SDK seals is one the server refuses.
MAX_EPOCH = 2**31 - 1

HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


@dataclass(frozen=True)
class WrappedChatKey:
    """What the wrapping device uploads for one recipient device."""

    wrapped_key: bytes  # 80 bytes: HPKE enc (32) || ciphertext of the ChatKey (32 + 16 tag)
    signature: bytes  # 64 bytes, by the wrapping device's signing key


def chatkey_generate(rng: Rng = os.urandom) -> bytes:
    """A fresh 32-byte ChatKey."""
    return random_bytes(rng, CHAT_KEY_BYTES)


def wrap_info(*, conversation_id: uuid.UUID, epoch: int, recipient_device_id: uuid.UUID) -> bytes:
    """HPKE `info`: binds the wrapped key to one conversation, epoch and recipient device."""
    return (
        CHATKEY_WRAP_LABEL
        + u8(PROTOCOL_VERSION)
        + uuid_bytes(conversation_id)
        + u32(epoch)
        + uuid_bytes(recipient_device_id)
    )


def wrap_signature_message(
    *,
    conversation_id: uuid.UUID,
    epoch: int,
    recipient_device_id: uuid.UUID,
    wrapper_device_id: uuid.UUID,
    wrapped_key: bytes,
) -> bytes:
    """The bytes the wrapping device signs (2.2 `wrap_signature_message`)."""
    return (
        CHATKEY_WRAP_SIG_LABEL
        + u8(PROTOCOL_VERSION)
        + uuid_bytes(conversation_id)
        + u32(epoch)
        + uuid_bytes(recipient_device_id)
        + uuid_bytes(wrapper_device_id)
        + wrapped_key
    )


def chatkey_wrap(
    *,
    chat_key: bytes,
    conversation_id: uuid.UUID,
    epoch: int,
    recipient_device_id: uuid.UUID,
    recipient_x25519_public_key: bytes,
    wrapper: DeviceKeyPair,
) -> WrappedChatKey:
    """HPKE-seal `chat_key` to one recipient device and sign the result with `wrapper`.

    Raises ValueError for a malformed argument, an epoch outside 1..2**31-1, or a low-order
    recipient key (HPKE refuses an all-zero X25519 shared secret, RFC 9180 section 7.1.4).
    """
    if len(chat_key) != CHAT_KEY_BYTES:
        raise ValueError(f"a ChatKey is {CHAT_KEY_BYTES} bytes")
    if not 1 <= epoch <= MAX_EPOCH:
        raise ValueError("epochs are numbered from 1")
    if len(recipient_x25519_public_key) != KEY_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_BYTES} bytes")
    info = wrap_info(conversation_id=conversation_id, epoch=epoch, recipient_device_id=recipient_device_id)
    recipient_key = X25519PublicKey.from_public_bytes(recipient_x25519_public_key)
    wrapped_key = HPKE_SUITE.encrypt(chat_key, recipient_key, info=info)
    signed = wrap_signature_message(
        conversation_id=conversation_id,
        epoch=epoch,
        recipient_device_id=recipient_device_id,
        wrapper_device_id=wrapper.device_id,
        wrapped_key=wrapped_key,
    )
    return WrappedChatKey(wrapped_key=wrapped_key, signature=wrapper.sign(signed))


def chatkey_unwrap(
    *,
    wrapped_key: bytes,
    signature: bytes,
    conversation_id: uuid.UUID,
    epoch: int,
    recipient: DeviceKeyPair,
    wrapper_device_id: uuid.UUID,
    wrapper_ed25519_public_key: bytes,
) -> bytes:
    """Verify the wrapper's signature, then HPKE-open with this device's key; return the ChatKey.

    The caller must already have checked that `wrapper_ed25519_public_key` belongs to a vouched
    device of a member (2.2). `info` is recomputed here from the caller's own view of the
    conversation, epoch and device id, so a key moved elsewhere fails to open.

    Raises DecryptError(BAD_SIGNATURE) if the signature fails (or the epoch does not fit in u32),
    DecryptError(TAMPERED) if the wrapped key has the wrong length or HPKE does not open.
    """
    try:
        signed = wrap_signature_message(
            conversation_id=conversation_id,
            epoch=epoch,
            recipient_device_id=recipient.device_id,
            wrapper_device_id=wrapper_device_id,
            wrapped_key=wrapped_key,
        )
    except ValueError:
        # An epoch that does not fit in u32 has no signable encoding, so no valid signature.
        raise DecryptError(DecryptFailure.BAD_SIGNATURE, f"epoch {epoch} cannot have been signed") from None
    if not ed25519_verify(wrapper_ed25519_public_key, signature, signed):
        raise DecryptError(DecryptFailure.BAD_SIGNATURE, "the wrapped key's signature does not verify")
    if len(wrapped_key) != WRAPPED_KEY_BYTES:
        raise DecryptError(DecryptFailure.TAMPERED, f"a wrapped key is {WRAPPED_KEY_BYTES} bytes")
    info = wrap_info(conversation_id=conversation_id, epoch=epoch, recipient_device_id=recipient.device_id)
    try:
        chat_key = HPKE_SUITE.decrypt(wrapped_key, recipient.x25519_private_key, info=info)
    except (InvalidTag, ValueError):
        raise DecryptError(DecryptFailure.TAMPERED, "the wrapped key does not open for this device") from None
    return chat_key  # 32 bytes: an 80-byte wrapped key leaves exactly 32 after enc and tag
