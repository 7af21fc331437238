"""Writes on the message log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from common.realtime import device_group, publish_to_groups_on_commit
from conversations.models import Conversation
from conversations.selectors import access_conversation, conversation_active_device_ids
from devices.models import Device
from messaging.errors import (
    ClientMessageIdReusedError,
    EnvelopeSenderMismatchError,
    EnvelopeStaleEpochError,
    EnvelopeTooLargeError,
    EnvelopeUnsupportedVersionError,
)
from messaging.events import message_new_event
from messaging.models import Message
from messaging.selectors import message_get_by_client_id

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class EnvelopeContent:
    """What a device sends; `(sender, client_message_id)` is the idempotency key."""

    conversation_id: uuid.UUID
    version: int
    epoch: int
    client_message_id: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes

    def matches(self, message: Message) -> bool:
        return (
            message.conversation_id == self.conversation_id
            and message.version == self.version
            and message.epoch == self.epoch
            and bytes(message.nonce) == self.nonce
            and bytes(message.ciphertext) == self.ciphertext
            and bytes(message.signature) == self.signature
        )


@dataclass(frozen=True)
class EnvelopeSendResult:
    message: Message
    created: bool  # False: an identical resend, answered with the original


def _replay(existing: Message, content: EnvelopeContent) -> EnvelopeSendResult:
    if not content.matches(existing):
        raise ClientMessageIdReusedError()
    return EnvelopeSendResult(message=existing, created=False)


def envelope_send(*, device: Device, sender_device_id: uuid.UUID, content: EnvelopeContent) -> EnvelopeSendResult:
    """Append an envelope to the conversation's log and push it to every member device.

    `seq` is strictly increasing and gap-free in commit order: it is taken from the
    conversation row while holding that row's lock until commit, so a rollback gives the number
    back and no two transactions can interleave. The work is O(1) in the history's size.
    """
    # Membership first: a non-member learns nothing, not even which of its fields are wrong.
    conversation = access_conversation(user=device.user, conversation_id=content.conversation_id)
    if content.version != PROTOCOL_VERSION:
        raise EnvelopeUnsupportedVersionError()
    if sender_device_id != device.id:
        raise EnvelopeSenderMismatchError()
    if len(content.ciphertext) > settings.E2EE_MAX_CIPHERTEXT_BYTES:
        raise EnvelopeTooLargeError(settings.E2EE_MAX_CIPHERTEXT_BYTES)

    # Fast path for retries, without taking any lock.
    existing = message_get_by_client_id(sender_device=device, client_message_id=content.client_message_id)
    if existing is not None:
        return _replay(existing, content)

    # Fan-out list read before the lock, keeping the lock short; pushes are an optimisation and a
    # device activated meanwhile catches up from history.
    recipients = [
        device_group(device_id) for device_id in conversation_active_device_ids(conversation_id=conversation.pk)
    ]
    try:
        with transaction.atomic(durable=True):
            locked = (
                Conversation.objects.select_for_update().only("id", "current_epoch", "last_seq").get(pk=conversation.pk)
            )
            # A concurrent retry of the same send may have committed while we waited.
            existing = message_get_by_client_id(sender_device=device, client_message_id=content.client_message_id)
            if existing is not None:
                return _replay(existing, content)
            if content.epoch != locked.current_epoch:
                raise EnvelopeStaleEpochError(locked.current_epoch)
            seq = locked.last_seq + 1
            Conversation.objects.filter(pk=locked.pk).update(last_seq=seq)
            message = Message.objects.create(
                conversation_id=locked.pk,
                seq=seq,
                version=content.version,
                epoch=content.epoch,
                sender_device=device,
                client_message_id=content.client_message_id,
                nonce=content.nonce,
                ciphertext=content.ciphertext,
                signature=content.signature,
            )
            publish_to_groups_on_commit(recipients, message_new_event(message))
    except IntegrityError:
        # The same (device, client_message_id) sent concurrently into another conversation:
        # the other conversation's lock does not serialise with ours; the constraint does.
        existing = message_get_by_client_id(sender_device=device, client_message_id=content.client_message_id)
        if existing is not None:
            return _replay(existing, content)
        raise
    return EnvelopeSendResult(message=message, created=True)


# What a purged message holds instead of its content: all zeros, in the shortest well-formed
# envelope (a 16-byte ciphertext is a bare AES-GCM tag), so clients still parse it and report it
# as a failed message (`bad_signature`), and nothing of the original remains.
TOMBSTONE_CIPHERTEXT = bytes(16)
TOMBSTONE_NONCE = bytes(12)
TOMBSTONE_SIGNATURE = bytes(64)


def messages_tombstone_sent_by(*, device_ids: list[uuid.UUID]) -> int:
    """Building block (operator purge, inside the caller's transaction): erase the content of
    every message these devices sent (zeroed tombstones) but keep the rows, so every
    conversation's `seq` stays gap-free. Returns the count."""
    return Message.objects.filter(sender_device_id__in=device_ids).update(
        ciphertext=TOMBSTONE_CIPHERTEXT, nonce=TOMBSTONE_NONCE, signature=TOMBSTONE_SIGNATURE
    )
