"""The one seal and the one open of a message envelope (docs/protocol.md 2.3).

Every sender and receiver in the SDK goes through these two functions: the session and the
realtime client (through `client.core.machine`), a queued message sealed again for a new epoch,
and the benchmark's load generator. They take the keys as arguments and do the cryptographic
steps in the protocol's order; deciding whom to trust and where keys come from is the caller's
(`EnvelopeKeys`).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Protocol

from client import protocol as proto
from client.core.needs import Sealed
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair, Rng
from client.crypto.message import message_encrypt, message_header, message_open, message_signature_verify
from client.crypto.wrap import MAX_EPOCH


class EnvelopeKeys(Protocol):
    """Where `envelope_open` gets its keys; each raises DecryptError (or the core's NeedError)."""

    def sender_key(self, envelope: proto.Envelope) -> bytes:
        """The ed25519 key of the sending device, once it is trusted to send to the conversation."""
        ...

    def chat_key(self, envelope: proto.Envelope) -> bytes:
        """The ChatKey of the envelope's conversation and epoch."""
        ...


def envelope_seal(
    *,
    chat_key: bytes,
    conversation_id: uuid.UUID,
    epoch: int,
    sender: DeviceKeyPair,
    payload: dict[str, Any],
    lists_seen: bytes,
    rng: Rng = os.urandom,
    client_message_id: bytes | None = None,
    attachments: list[uuid.UUID] | None = None,
) -> Sealed:
    """Encrypt and sign `payload` under the epoch's ChatKey: the send body (the same over REST and
    in a WebSocket `send` frame). `client_message_id` is given when sealing a queued message again
    (same id, so the server's idempotency still holds)."""
    sealed = message_encrypt(
        chat_key=chat_key,
        conversation_id=conversation_id,
        epoch=epoch,
        sender=sender,
        payload=payload,
        device_lists=lists_seen,
        client_message_id=client_message_id,
        rng=rng,
    )
    request = proto.send_request(
        conversation_id=conversation_id,
        epoch=epoch,
        sender_device_id=sender.device_id,
        client_message_id=sealed.client_message_id,
        nonce=sealed.nonce,
        ciphertext=sealed.ciphertext,
        signature=sealed.signature,
        device_lists=sealed.device_lists,
        version=sealed.version,
        attachments=attachments,
    )
    return Sealed(request, sealed.client_message_id, epoch)


def envelope_open(envelope: proto.Envelope, keys: EnvelopeKeys) -> dict[str, Any]:
    """Steps 1-5 of 2.3 "Receiving": version, epoch range, a trusted sender, its signature, the
    epoch's key and the AEAD; the payload. The device lists seen (2.19) and replays (step 6) are
    the caller's. Raises DecryptError with the failed check's reason."""
    if envelope.version != proto.PROTOCOL_VERSION:
        raise DecryptError(DecryptFailure.UNSUPPORTED_VERSION, f"version {envelope.version}")
    if not 1 <= envelope.epoch <= MAX_EPOCH:
        raise DecryptError(DecryptFailure.UNKNOWN_EPOCH, f"epoch {envelope.epoch} cannot exist")
    sender_key = keys.sender_key(envelope)
    header = message_header(
        conversation_id=envelope.conversation_id,
        epoch=envelope.epoch,
        sender_device_id=envelope.sender_device_id,
        client_message_id=envelope.client_message_id,
        device_lists=envelope.device_lists,
    )
    if not message_signature_verify(
        header=header,
        nonce=envelope.nonce,
        ciphertext=envelope.ciphertext,
        signature=envelope.signature,
        sender_ed25519_public_key=sender_key,
    ):
        raise DecryptError(DecryptFailure.BAD_SIGNATURE, "the sender device's signature does not verify")
    return message_open(
        chat_key=keys.chat_key(envelope), header=header, nonce=envelope.nonce, ciphertext=envelope.ciphertext
    )
