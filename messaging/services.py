"""Writes on the message log: sends (one or a batch per transaction) and delivery cursors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.errors import ApiError
from common.protocol import PROTOCOL_VERSION
from conversations.errors import ConversationNotFoundError
from conversations.selectors import conversation_last_seqs
from devices.errors import DeviceNotActiveError
from devices.models import Device
from media.errors import MediaNotFoundError
from messaging import sql
from messaging.errors import (
    ClientMessageIdReusedError,
    EnvelopeSenderMismatchError,
    EnvelopeStaleEpochError,
    EnvelopeTooLargeError,
    EnvelopeUnsupportedVersionError,
)
from messaging.models import Message
from messaging.publisher import messages_publish_on_commit
from notifications.services import messages_notify_on_commit

# An idempotency-key race with another process rolls the whole batch back; retried this often.
_BATCH_ATTEMPTS = 3
# Media blob ids one message may name (protocol.md 4.4, 4.5).
MAX_ATTACHMENTS = 16
# Bytes of `device_lists` (protocol.md 2.19, 4.4): about 1,400 members' lists.
MAX_DEVICE_LISTS_BYTES = 65_536


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
    # The device lists the sender saw (protocol.md 2.19); opaque, at most MAX_DEVICE_LISTS_BYTES.
    device_lists: bytes = b""
    # Media blob ids the message refers to (protocol.md 4.5): members may then download them.
    attachments: tuple[uuid.UUID, ...] = ()

    def matches(self, message: Message) -> bool:
        return (
            message.conversation_id == self.conversation_id
            and message.version == self.version
            and message.epoch == self.epoch
            and bytes(message.nonce) == self.nonce
            and bytes(message.ciphertext) == self.ciphertext
            and bytes(message.signature) == self.signature
            and bytes(message.device_lists) == self.device_lists
        )


@dataclass(frozen=True)
class SendRequest:
    """One send. `device` is the authenticated device with `user` loaded; `origin` names the
    connection it came from (a channel name, "" for REST), so that connection is not pushed its
    own message."""

    device: Device
    sender_device_id: uuid.UUID
    content: EnvelopeContent
    origin: str = ""


@dataclass(frozen=True)
class EnvelopeSendResult:
    message: Message
    created: bool  # False: an identical resend, answered with the original


@dataclass(frozen=True)
class MessageStored:
    """A message the batch added to the log, and the connection it came from ("" for REST)."""

    message: Message
    origin: str


@dataclass(frozen=True)
class SendBatchOutcome:
    """Per request (same order) a result or the error to answer it with, and the messages the
    batch added (in insertion order: seq order per conversation), for the publisher
    (messaging/publisher.py) once the batch has committed."""

    results: list[EnvelopeSendResult | ApiError]
    stored: list[MessageStored] = field(default_factory=list)


def envelope_send(*, device: Device, sender_device_id: uuid.UUID, content: EnvelopeContent) -> EnvelopeSendResult:
    """Append one envelope to its conversation's log and push it to every member device (REST)."""
    outcome = envelope_send_batch([SendRequest(device, sender_device_id, content)])
    messages_publish_on_commit(outcome.stored)  # committed: the batch's transaction is durable
    result = outcome.results[0]
    if isinstance(result, ApiError):
        raise result
    return result


def envelope_send_batch(requests: Sequence[SendRequest]) -> SendBatchOutcome:
    """Store many sends in one transaction (group commit): the realtime gateway's hot path.

    Each request is judged on its own, exactly as a single send is (same checks, same errors,
    same idempotency); one refused request does not affect the others. Requests to the same
    conversation get increasing `seq` in list order. `seq` is gap-free in commit order: it comes
    from the conversation row, locked until commit. The work is a fixed number of queries per
    batch (plus one cheap UPDATE per conversation touched), independent of history size.

    Nothing is published here: the caller hands `stored` to the publisher (messaging/publisher.py)
    after this function has returned, so rendering the frames holds no row lock.
    """
    for attempt in range(_BATCH_ATTEMPTS):
        try:
            return _send_batch_once(requests)
        except IntegrityError:
            # A concurrent send of the same (device, client_message_id) committed between our
            # lookup and our insert; the retry's lookup sees it and answers it as a resend.
            if attempt == _BATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _precheck(request: SendRequest, *, is_member: bool, is_active: bool) -> ApiError | None:
    # Membership first: a non-member learns nothing, not even which of its fields are wrong.
    if not is_member:
        return ConversationNotFoundError()
    if not is_active:
        return DeviceNotActiveError()
    content = request.content
    if content.version != PROTOCOL_VERSION:
        return EnvelopeUnsupportedVersionError()
    if request.sender_device_id != request.device.pk:
        return EnvelopeSenderMismatchError()
    if len(content.ciphertext) > settings.E2EE_MAX_CIPHERTEXT_BYTES:
        return EnvelopeTooLargeError(settings.E2EE_MAX_CIPHERTEXT_BYTES)
    return None


def _send_batch_once(requests: Sequence[SendRequest]) -> SendBatchOutcome:
    results: list[EnvelopeSendResult | ApiError | None] = [None] * len(requests)
    conversation_ids = {r.content.conversation_id for r in requests}
    device_ids = {r.device.pk for r in requests}
    user_ids = {r.device.user_id for r in requests}
    # Hand-written SQL, one statement per step (messaging/sql.py).
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        members, active = sql.members_and_active(cursor, conversation_ids, user_ids, device_ids)
        existing = sql.existing_sends(cursor, device_ids, [r.content.client_message_id for r in requests])
        # Nothing at all for the common batch without attachments.
        with_attachments = any(r.content.attachments for r in requests)
        blob_owners = (
            sql.blob_uploaders_complete(cursor, {pk for r in requests for pk in r.content.attachments})
            if with_attachments
            else {}
        )
        fresh: list[int] = []
        for index, request in enumerate(requests):
            error = _precheck(
                request,
                is_member=(request.content.conversation_id, request.device.user_id) in members,
                is_active=request.device.pk in active,
            )
            if error is None and request.content.attachments:
                error = _attachments_check(request, blob_owners)
            if error is not None:
                results[index] = error
                continue
            previous = existing.get((request.device.pk, request.content.client_message_id))
            if previous is not None:
                results[index] = (
                    EnvelopeSendResult(previous, created=False)
                    if request.content.matches(previous)
                    else ClientMessageIdReusedError()
                )
                continue
            fresh.append(index)

        to_insert: list[Message] = []
        stored: list[MessageStored] = []
        if fresh:
            locked, push_targets = sql.conversations_lock(cursor, {requests[i].content.conversation_id for i in fresh})
            now = timezone.now()
            in_batch: dict[tuple[uuid.UUID, bytes], Message] = {}
            for index in fresh:
                request = requests[index]
                content = request.content
                key = (request.device.pk, content.client_message_id)
                twin = in_batch.get(key)
                if twin is not None:  # the same send twice in one batch: the second is a resend
                    results[index] = (
                        EnvelopeSendResult(twin, created=False)
                        if content.matches(twin)
                        else ClientMessageIdReusedError()
                    )
                    continue
                epoch, last_seq = locked[content.conversation_id]
                if content.epoch != epoch:
                    results[index] = EnvelopeStaleEpochError(epoch)
                    continue
                locked[content.conversation_id][1] = last_seq + 1
                message = Message(
                    conversation_id=content.conversation_id,
                    seq=last_seq + 1,
                    version=content.version,
                    epoch=content.epoch,
                    sender_device=request.device,
                    client_message_id=content.client_message_id,
                    nonce=content.nonce,
                    ciphertext=content.ciphertext,
                    signature=content.signature,
                    device_lists=content.device_lists,
                    created_at=now,
                )
                in_batch[key] = message
                to_insert.append(message)
                stored.append(MessageStored(message, request.origin))
                results[index] = EnvelopeSendResult(message, created=True)
            if to_insert:
                sql.messages_insert(cursor, to_insert, locked)
                if with_attachments:
                    sql.references_insert(cursor, _references(requests, results))
                if push_targets:  # wake offline devices after commit (one cheap callback per batch)
                    messages_notify_on_commit(to_insert)
    final = [r for r in results if r is not None]
    assert len(final) == len(requests)
    return SendBatchOutcome(results=final, stored=stored)


def _references(
    requests: Sequence[SendRequest], results: Sequence[EnvelopeSendResult | ApiError | None]
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """One (blob, conversation, message id) per blob of each new message; resends create no
    message and so no reference."""
    references = []
    for request, result in zip(requests, results, strict=True):
        if request.content.attachments and isinstance(result, EnvelopeSendResult) and result.created:
            message = result.message
            for blob_id in dict.fromkeys(request.content.attachments):
                references.append((blob_id, message.conversation_id, message.pk))
    return references


def _attachments_check(request: SendRequest, blob_owners: dict[uuid.UUID, int]) -> ApiError | None:
    """Only complete blobs the sender's own account uploaded may be attached."""
    user_id = request.device.user_id
    if any(blob_owners.get(blob_id) != user_id for blob_id in request.content.attachments):
        return MediaNotFoundError()
    return None


@dataclass(frozen=True)
class CursorAdvance:
    device_id: uuid.UUID
    conversation_id: uuid.UUID
    delivered_seq: int
    read_seq: int


def delivery_cursors_advance(advances: Sequence[CursorAdvance]) -> None:
    """Move many (device, conversation) cursors forward in one statement; never backwards.

    Callers (messaging/cursors.py) have checked membership and refused positions beyond the
    conversation's last seq (`CursorBeyondLastSeqError`); a position that still gets here above
    it is stored as the last seq: a cursor past the log would hide every later message from the
    device's catch-up and make its receipts claim deliveries that never happened.
    """
    if not advances:
        return
    last_seqs = conversation_last_seqs(conversation_ids={a.conversation_id for a in advances})
    rows = [
        (
            a.device_id,
            a.conversation_id,
            min(a.delivered_seq, last_seqs.get(a.conversation_id, 0)),
            min(a.read_seq, last_seqs.get(a.conversation_id, 0)),
        )
        for a in sorted(advances, key=lambda a: (a.device_id, a.conversation_id))  # lock order
    ]
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        sql.cursors_upsert(cursor, rows)


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
        ciphertext=TOMBSTONE_CIPHERTEXT, nonce=TOMBSTONE_NONCE, signature=TOMBSTONE_SIGNATURE, device_lists=b""
    )
