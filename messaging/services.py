"""Writes on the message log: sends (one or a batch per transaction) and delivery cursors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.errors import ApiError
from common.protocol import PROTOCOL_VERSION
from common.realtime import conversation_group, publish_on_commit
from conversations.errors import ConversationNotFoundError
from conversations.models import Conversation, Membership
from conversations.selectors import conversation_last_seqs
from devices.errors import DeviceNotActiveError
from devices.models import Device
from media.errors import MediaNotFoundError
from media.models import MediaBlob, MediaReference
from messaging.errors import (
    ClientMessageIdReusedError,
    EnvelopeSenderMismatchError,
    EnvelopeStaleEpochError,
    EnvelopeTooLargeError,
    EnvelopeUnsupportedVersionError,
)
from messaging.events import ConversationMessagesEvent, conversation_messages_event
from messaging.models import DeliveryCursor, Message
from messaging.wire import message_frame_json
from notifications.models import PushTarget
from notifications.services import messages_notify_on_commit

# An idempotency-key race with another process rolls the whole batch back; retried this often.
_BATCH_ATTEMPTS = 3
# Rows per INSERT statement: 10 parameters each, well under SQLite's 32,766.
_INSERT_CHUNK = 200
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


@dataclass
class SendBatchOutcome:
    """Per request (same order) a result or the error to answer it with, plus the fan-out events
    that must be published once the batch has committed (already done when `publish=True`)."""

    results: list[EnvelopeSendResult | ApiError]
    events: list[tuple[str, ConversationMessagesEvent]] = field(default_factory=list)


def envelope_send(*, device: Device, sender_device_id: uuid.UUID, content: EnvelopeContent) -> EnvelopeSendResult:
    """Append one envelope to its conversation's log and push it to every member device (REST)."""
    outcome = envelope_send_batch([SendRequest(device, sender_device_id, content)], publish=True)
    result = outcome.results[0]
    if isinstance(result, ApiError):
        raise result
    return result


def envelope_send_batch(requests: Sequence[SendRequest], *, publish: bool) -> SendBatchOutcome:
    """Store many sends in one transaction (group commit): the realtime gateway's hot path.

    Each request is judged on its own, exactly as a single send is (same checks, same errors,
    same idempotency); one refused request does not affect the others. Requests to the same
    conversation get increasing `seq` in list order. `seq` is gap-free in commit order: it comes
    from the conversation row, locked until commit. The work is a fixed number of queries per
    batch (plus one cheap UPDATE per conversation touched), independent of history size.

    With `publish=True` the fan-out is registered to run after commit; otherwise the caller gets
    the events in the outcome and publishes them itself after this function has returned.
    """
    for attempt in range(_BATCH_ATTEMPTS):
        try:
            return _send_batch_once(requests, publish=publish)
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


def _send_batch_once(requests: Sequence[SendRequest], *, publish: bool) -> SendBatchOutcome:
    results: list[EnvelopeSendResult | ApiError | None] = [None] * len(requests)
    conversation_ids = {r.content.conversation_id for r in requests}
    device_ids = {r.device.pk for r in requests}
    user_ids = {r.device.user_id for r in requests}
    # Hand-written SQL, one statement per step: this runs for every realtime batch, and building
    # the same queries through the ORM cost about two thirds of the batch's CPU (cProfile).
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        members, active = _members_and_active(cursor, conversation_ids, user_ids, device_ids)
        existing = _existing_sends(cursor, device_ids, [r.content.client_message_id for r in requests])
        # Nothing at all for the common batch without attachments.
        with_attachments = any(r.content.attachments for r in requests)
        blob_owners = _attachable_blobs(cursor, requests) if with_attachments else {}
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
        if fresh:
            locked, push_targets = _conversations_lock(cursor, {requests[i].content.conversation_id for i in fresh})
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
                results[index] = EnvelopeSendResult(message, created=True)
            if to_insert:
                _messages_insert(cursor, to_insert, locked)
                if with_attachments:
                    _references_insert(cursor, requests, results)
                if push_targets:  # wake offline devices after commit (one cheap callback per batch)
                    messages_notify_on_commit(to_insert)

        events = _fanout_events(requests, results, to_insert)
        if publish:
            for group, event in events:
                publish_on_commit(group, event)
    final = [r for r in results if r is not None]
    assert len(final) == len(requests)
    return SendBatchOutcome(results=final, events=[] if publish else events)


def _attachments_check(request: SendRequest, blob_owners: dict[uuid.UUID, int]) -> ApiError | None:
    """Only complete blobs the sender's own account uploaded may be attached."""
    user_id = request.device.user_id
    if any(blob_owners.get(blob_id) != user_id for blob_id in request.content.attachments):
        return MediaNotFoundError()
    return None


def _attachable_blobs(cursor: Any, requests: Sequence[SendRequest]) -> dict[uuid.UUID, int]:
    """The uploader of every complete blob the batch names, in one statement."""
    ids = sorted({blob_id for r in requests for blob_id in r.content.attachments})
    params = [_db_uuid(pk) for pk in ids]
    cursor.execute(
        f"SELECT id, uploader_id FROM {MediaBlob._meta.db_table} "  # noqa: S608 (our table name)
        f"WHERE id IN ({_in_list(params)}) AND state = %s",
        [*params, MediaBlob.State.COMPLETE.value],
    )
    return {_as_uuid(pk): int(uploader_id) for pk, uploader_id in cursor.fetchall()}


def _references_insert(
    cursor: Any, requests: Sequence[SendRequest], results: Sequence[EnvelopeSendResult | ApiError | None]
) -> None:
    """One reference row per (blob, new message), in one multi-row INSERT per chunk; resends
    create no message and so no row, and the unique pair makes a duplicate a no-op anyway."""
    rows: list[Any] = []
    for request, result in zip(requests, results, strict=True):
        if request.content.attachments and isinstance(result, EnvelopeSendResult) and result.created:
            message = result.message
            for blob_id in dict.fromkeys(request.content.attachments):
                rows.append((_db_uuid(blob_id), _db_uuid(message.conversation_id), message.pk))
    if not rows:
        return
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    table = MediaReference._meta.db_table
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        cursor.execute(
            f"INSERT INTO {table} (blob_id, conversation_id, message_id, created_at) "  # noqa: S608
            f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(chunk))} "
            "ON CONFLICT (blob_id, message_id) DO NOTHING",
            [value for row in chunk for value in (*row, stamp)],
        )


def _in_list(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _as_uuid(value: Any) -> uuid.UUID:
    # A uuid column comes back as UUID from PostgreSQL and as 32 hex digits from SQLite.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _members_and_active(
    cursor: Any, conversation_ids: set[uuid.UUID], user_ids: set[int], device_ids: set[uuid.UUID]
) -> tuple[set[tuple[uuid.UUID, int]], set[uuid.UUID]]:
    """Which (conversation, user) pairs are memberships and which devices may send, in one round
    trip: rows tagged "m" are memberships, rows tagged "d" active devices of active users."""
    conversations = [_db_uuid(pk) for pk in conversation_ids]
    users = list(user_ids)
    devices = [_db_uuid(pk) for pk in device_ids]
    membership, device, user = (
        Membership._meta.db_table,
        Device._meta.db_table,
        Device._meta.get_field("user").related_model._meta.db_table,
    )
    # Table names come from the models and every value is a parameter.
    cursor.execute(
        f"SELECT 'm', conversation_id, user_id FROM {membership} "  # noqa: S608
        f"WHERE conversation_id IN ({_in_list(conversations)}) AND user_id IN ({_in_list(users)}) "
        f"UNION ALL SELECT 'd', d.id, NULL FROM {device} d JOIN {user} u ON u.id = d.user_id "
        f"WHERE d.id IN ({_in_list(devices)}) AND d.status = %s AND u.is_active",
        [*conversations, *users, *devices, Device.Status.ACTIVE.value],
    )
    members: set[tuple[uuid.UUID, int]] = set()
    active: set[uuid.UUID] = set()
    for tag, pk, user_id in cursor.fetchall():
        if tag == "m":
            members.add((_as_uuid(pk), int(user_id)))
        else:
            active.add(_as_uuid(pk))
    return members, active


def _existing_sends(
    cursor: Any, device_ids: set[uuid.UUID], client_message_ids: list[bytes]
) -> dict[tuple[uuid.UUID, bytes], Message]:
    """Messages already stored under these idempotency keys (resends). The probe is a bare index
    lookup; the rare hits are then loaded as models, with the sender for the answer."""
    devices = [_db_uuid(pk) for pk in device_ids]
    table = Message._meta.db_table
    # Both IN lists together use the (sender_device, client_message_id) unique index.
    cursor.execute(
        f"SELECT id FROM {table} WHERE sender_device_id IN ({_in_list(devices)}) "  # noqa: S608
        f"AND client_message_id IN ({_in_list(client_message_ids)})",
        [*devices, *client_message_ids],
    )
    ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return {}
    return {
        (m.sender_device_id, bytes(m.client_message_id)): m
        for m in Message.objects.select_related("sender_device__user").filter(pk__in=ids)
    }


def _conversations_lock(cursor: Any, conversation_ids: set[uuid.UUID]) -> tuple[dict[uuid.UUID, list[int]], bool]:
    """Lock every conversation written to, in id order (no deadlock between batches); their
    [current epoch, last seq]. SQLite has no row locks: its write transaction serialises.

    Also whether any device anywhere has a push target, in the same round trip (an uncorrelated
    EXISTS, evaluated once: one index page): without targets the batch does nothing for them."""
    ordered = [_db_uuid(pk) for pk in sorted(conversation_ids)]
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    cursor.execute(
        f"SELECT id, current_epoch, last_seq, EXISTS (SELECT 1 FROM {PushTarget._meta.db_table}) "  # noqa: S608
        f"FROM {Conversation._meta.db_table} WHERE id IN ({_in_list(ordered)}) ORDER BY id{lock}",
        ordered,
    )
    rows = cursor.fetchall()
    locked = {_as_uuid(pk): [int(epoch), int(last_seq)] for pk, epoch, last_seq, _ in rows}
    return locked, any(bool(row[3]) for row in rows)


def _messages_insert(cursor: Any, messages: list[Message], locked: dict[uuid.UUID, list[int]]) -> None:
    touched = sorted({m.conversation_id for m in messages})
    cursor.executemany(
        f"UPDATE {Conversation._meta.db_table} SET last_seq = %s WHERE id = %s",  # noqa: S608 (our table name)
        [(locked[pk][1], _db_uuid(pk)) for pk in touched],
    )
    stamp = connection.ops.adapt_datetimefield_value(messages[0].created_at)
    columns = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    for start in range(0, len(messages), _INSERT_CHUNK):
        chunk = messages[start : start + _INSERT_CHUNK]
        params: list[Any] = []
        for m in chunk:
            params += [
                _db_uuid(m.conversation_id),
                m.seq,
                m.version,
                m.epoch,
                _db_uuid(m.sender_device_id),
                m.client_message_id,
                m.nonce,
                m.ciphertext,
                m.signature,
                m.device_lists,
                stamp,
            ]
        # One multi-row INSERT per chunk; RETURNING gives the ids in VALUES order on both
        # backends (what Django's bulk_create relies on too).
        cursor.execute(
            f"INSERT INTO {Message._meta.db_table} (conversation_id, seq, version, epoch, "  # noqa: S608
            "sender_device_id, client_message_id, nonce, ciphertext, signature, device_lists, created_at) "
            f"VALUES {', '.join([columns] * len(chunk))} RETURNING id",
            params,
        )
        for message, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
            message.pk = pk
            message._state.adding, message._state.db = False, connection.alias  # saved, like the ORM's


def _db_uuid(value: uuid.UUID) -> Any:
    # Raw SQL needs the backend's UUID form: a uuid column on PostgreSQL, char(32) on SQLite.
    return value if connection.vendor == "postgresql" else value.hex


def _fanout_events(
    requests: Sequence[SendRequest],
    results: Sequence[EnvelopeSendResult | ApiError | None],
    inserted: list[Message],
) -> list[tuple[str, ConversationMessagesEvent]]:
    """One event per conversation, its new messages in seq order, each pre-rendered as the
    `message` frame (encoded once here, not once per receiving connection)."""
    if not inserted:
        return []
    origin_of = {
        id(result.message): request.origin
        for request, result in zip(requests, results, strict=True)
        if isinstance(result, EnvelopeSendResult) and result.created
    }
    by_conversation: dict[uuid.UUID, list[tuple[int, str, str]]] = {}
    for message in inserted:
        by_conversation.setdefault(message.conversation_id, []).append(
            (message.seq, origin_of.get(id(message), ""), message_frame_json(message))
        )
    stored_at = inserted[0].created_at.timestamp()
    return [
        (conversation_group(pk), conversation_messages_event(pk, rows, stored_at=stored_at))
        for pk, rows in by_conversation.items()
    ]


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
    table = DeliveryCursor._meta.db_table
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    # Table names come from the models and every value is a parameter.
    sql = (
        f"INSERT INTO {table} (device_id, conversation_id, delivered_seq, read_seq, updated_at) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (device_id, conversation_id) DO UPDATE SET "
        f"delivered_seq = {greatest}({table}.delivered_seq, excluded.delivered_seq), "
        f"read_seq = {greatest}({table}.read_seq, excluded.read_seq), "
        "updated_at = excluded.updated_at"
    )
    rows = [
        (
            _db_uuid(a.device_id),
            _db_uuid(a.conversation_id),
            min(a.delivered_seq, last_seqs.get(a.conversation_id, 0)),
            min(a.read_seq, last_seqs.get(a.conversation_id, 0)),
            stamp,
        )
        for a in sorted(advances, key=lambda a: (a.device_id, a.conversation_id))  # lock order
    ]
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


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
