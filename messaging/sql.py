"""The message log's hot path in hand-written SQL: every statement the realtime send and
cursor batches run, in one place, each one round trip whatever the batch size.

Building the same queries through the ORM cost about two thirds of a send batch's CPU
(cProfile). Table names come from the models and every value is a parameter. Each statement runs
on PostgreSQL and SQLite alike (tests/messaging/test_sql.py runs on whichever the suite runs on;
CI runs both); where they differ (UUID columns, GREATEST, FOR UPDATE) the function says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.utils import timezone

from conversations.models import Conversation, Membership
from devices.models import Device
from media.models import MediaBlob, MediaReference
from messaging.models import DeliveryCursor, Message
from notifications.models import PushTarget

# Rows per INSERT statement: 11 parameters each, well under SQLite's 32,766.
INSERT_CHUNK = 200


def in_list(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def as_uuid(value: Any) -> uuid.UUID:
    # A uuid column comes back as UUID from PostgreSQL and as 32 hex digits from SQLite.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def db_uuid(value: uuid.UUID) -> Any:
    # Raw SQL needs the backend's UUID form: a uuid column on PostgreSQL, char(32) on SQLite.
    return value if connection.vendor == "postgresql" else value.hex


def members_and_active(
    cursor: Any, conversation_ids: set[uuid.UUID], user_ids: set[int], device_ids: set[uuid.UUID]
) -> tuple[set[tuple[uuid.UUID, int]], set[uuid.UUID]]:
    """Which (conversation, user) pairs are memberships and which devices may send, in one round
    trip: rows tagged "m" are memberships, rows tagged "d" active devices of active users."""
    conversations = [db_uuid(pk) for pk in conversation_ids]
    users = list(user_ids)
    devices = [db_uuid(pk) for pk in device_ids]
    membership, device, user = (
        Membership._meta.db_table,
        Device._meta.db_table,
        Device._meta.get_field("user").related_model._meta.db_table,
    )
    # Table names come from the models and every value is a parameter.
    cursor.execute(
        f"SELECT 'm', conversation_id, user_id FROM {membership} "  # noqa: S608
        f"WHERE conversation_id IN ({in_list(conversations)}) AND user_id IN ({in_list(users)}) "
        f"UNION ALL SELECT 'd', d.id, NULL FROM {device} d JOIN {user} u ON u.id = d.user_id "
        f"WHERE d.id IN ({in_list(devices)}) AND d.status = %s AND u.is_active",
        [*conversations, *users, *devices, Device.Status.ACTIVE.value],
    )
    members: set[tuple[uuid.UUID, int]] = set()
    active: set[uuid.UUID] = set()
    for tag, pk, user_id in cursor.fetchall():
        if tag == "m":
            members.add((as_uuid(pk), int(user_id)))
        else:
            active.add(as_uuid(pk))
    return members, active


def existing_sends(
    cursor: Any, device_ids: set[uuid.UUID], client_message_ids: list[bytes]
) -> dict[tuple[uuid.UUID, bytes], Message]:
    """Messages already stored under these idempotency keys (resends). The probe is a bare index
    lookup; the rare hits are then loaded as models, with the sender for the answer."""
    devices = [db_uuid(pk) for pk in device_ids]
    table = Message._meta.db_table
    # Both IN lists together use the (sender_device, client_message_id) unique index.
    cursor.execute(
        f"SELECT id FROM {table} WHERE sender_device_id IN ({in_list(devices)}) "  # noqa: S608
        f"AND client_message_id IN ({in_list(client_message_ids)})",
        [*devices, *client_message_ids],
    )
    ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return {}
    return {
        (m.sender_device_id, bytes(m.client_message_id)): m
        for m in Message.objects.select_related("sender_device__user").filter(pk__in=ids)
    }


def conversations_lock(cursor: Any, conversation_ids: set[uuid.UUID]) -> tuple[dict[uuid.UUID, list[int]], bool]:
    """Lock every conversation written to, in id order (no deadlock between batches); their
    [current epoch, last seq]. SQLite has no row locks: its write transaction serialises.

    Also whether any device anywhere has a push target, in the same round trip (an uncorrelated
    EXISTS, evaluated once: one index page): without targets the batch does nothing for them."""
    ordered = [db_uuid(pk) for pk in sorted(conversation_ids)]
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    cursor.execute(
        f"SELECT id, current_epoch, last_seq, EXISTS (SELECT 1 FROM {PushTarget._meta.db_table}) "  # noqa: S608
        f"FROM {Conversation._meta.db_table} WHERE id IN ({in_list(ordered)}) ORDER BY id{lock}",
        ordered,
    )
    rows = cursor.fetchall()
    locked = {as_uuid(pk): [int(epoch), int(last_seq)] for pk, epoch, last_seq, _ in rows}
    return locked, any(bool(row[3]) for row in rows)


def messages_insert(cursor: Any, messages: list[Message], locked: dict[uuid.UUID, list[int]]) -> None:
    touched = sorted({m.conversation_id for m in messages})
    cursor.executemany(
        f"UPDATE {Conversation._meta.db_table} SET last_seq = %s WHERE id = %s",  # noqa: S608 (our table name)
        [(locked[pk][1], db_uuid(pk)) for pk in touched],
    )
    stamp = connection.ops.adapt_datetimefield_value(messages[0].created_at)
    columns = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    for start in range(0, len(messages), INSERT_CHUNK):
        chunk = messages[start : start + INSERT_CHUNK]
        params: list[Any] = []
        for m in chunk:
            params += [
                db_uuid(m.conversation_id),
                m.seq,
                m.version,
                m.epoch,
                db_uuid(m.sender_device_id),
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


def blob_uploaders_complete(cursor: Any, blob_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The uploader of every complete blob among `blob_ids`, in one statement."""
    params = [db_uuid(pk) for pk in sorted(blob_ids)]
    cursor.execute(
        f"SELECT id, uploader_id FROM {MediaBlob._meta.db_table} "  # noqa: S608 (our table name)
        f"WHERE id IN ({in_list(params)}) AND state = %s",
        [*params, MediaBlob.State.COMPLETE.value],
    )
    return {as_uuid(pk): int(uploader_id) for pk, uploader_id in cursor.fetchall()}


def references_insert(cursor: Any, references: Sequence[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
    """(blob, conversation, message id) reference rows, in one multi-row INSERT per chunk; the
    unique pair makes a duplicate a no-op."""
    if not references:
        return
    rows = [
        (db_uuid(blob_id), db_uuid(conversation_id), message_id) for blob_id, conversation_id, message_id in references
    ]
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    table = MediaReference._meta.db_table
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        cursor.execute(
            f"INSERT INTO {table} (blob_id, conversation_id, message_id, created_at) "  # noqa: S608
            f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(chunk))} "
            "ON CONFLICT (blob_id, message_id) DO NOTHING",
            [value for row in chunk for value in (*row, stamp)],
        )


def cursors_upsert(cursor: Any, rows: Sequence[tuple[uuid.UUID, uuid.UUID, int, int]]) -> None:
    """(device, conversation, delivered_seq, read_seq) cursor moves in one statement, each
    position only ever raised (GREATEST on PostgreSQL, the two-argument MAX on SQLite)."""
    table = DeliveryCursor._meta.db_table
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    cursor.executemany(
        f"INSERT INTO {table} (device_id, conversation_id, delivered_seq, read_seq, updated_at) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (device_id, conversation_id) DO UPDATE SET "
        f"delivered_seq = {greatest}({table}.delivered_seq, excluded.delivered_seq), "
        f"read_seq = {greatest}({table}.read_seq, excluded.read_seq), "
        "updated_at = excluded.updated_at",
        [
            (db_uuid(device), db_uuid(conversation), delivered, read, stamp)
            for device, conversation, delivered, read in rows
        ],
    )
