"""The device's local message store: received messages, cursors, the outbox and receipts.

One SQLite file per device (`messages.sqlite3` beside the key store, mode 0600, WAL, full sync so
an acknowledged message is on disk before its `ack` leaves). It holds:

* `messages`: every message this device has taken in, at its `(conversation, seq)` position:
  the decrypted payload (JSON) or the reason it could not be decrypted, never dropped silently.
  A message id `(sender_device_id, client_message_id)` is accepted at most once (partial unique
  index over decrypted rows): a re-push is a duplicate, the same id at another position a replay.
* `cursors`: per conversation, the contiguous seq (highest seq with every seq below it held),
  which is what the device acknowledges (§6.4), and its own read cursor.
* `outbox`: envelopes waiting for their `sent` frame, in the order they were queued. Only the
  ciphertext envelope (the §4.4 send body) is stored, never a plaintext; a resend after a restart
  is byte-identical, so the server's idempotency answers it with the original seq.
* `held`: the envelopes (ciphertext) of messages stored as `missing_key`, kept until the
  epoch's ChatKey arrives (a key request, protocol.md 4.8) and they are decrypted in place.
* `receipts`: the latest delivery/read cursors the server reported for other devices (§6.5).

This module is synchronous and must be used from one thread (the realtime client's event loop).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.crypto.encoding import b64d, b64e
from client.payloads import payload_text
from client.protocol import Envelope

FILE_NAME = "messages.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender_username TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    payload TEXT,
    failure TEXT,
    failure_detail TEXT,
    created_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    CHECK ((payload IS NULL) <> (failure IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_accepted_once
    ON messages (sender_device_id, client_message_id) WHERE failure IS NULL;
CREATE TABLE IF NOT EXISTS cursors (
    conversation_id TEXT PRIMARY KEY,
    contiguous_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0,
    read_reported_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL UNIQUE,
    envelope TEXT NOT NULL,
    queued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE TABLE IF NOT EXISTS receipts (
    conversation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    username TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL,
    read_seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, device_id)
);
"""


@dataclass(frozen=True)
class StoredMessage:
    conversation_id: uuid.UUID
    seq: int
    sender_username: str
    sender_device_id: uuid.UUID
    client_message_id: bytes
    epoch: int
    payload: dict[str, Any] | None  # None when it could not be decrypted
    failure: str | None  # a DecryptFailure value, or None
    failure_detail: str | None
    created_at: str
    received_at: str

    @property
    def text(self) -> str:
        return payload_text(self.payload, self.failure)


@dataclass(frozen=True)
class OutboxEntry:
    position: int
    conversation_id: uuid.UUID
    client_message_id: bytes
    envelope: dict[str, Any]  # the §4.4 send body: ciphertext, never plaintext
    queued_at: str


@dataclass(frozen=True)
class StoredReceipt:
    username: str
    device_id: uuid.UUID
    delivered_seq: int
    read_seq: int


class MessageStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @classmethod
    def open_in(cls, home: Path) -> MessageStore:
        """The store beside the key store in a device home (E2EE_HOME)."""
        return cls(Path(home) / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")  # cleanup only: the exception propagates unchanged
            raise
        self._db.execute("COMMIT")

    # -- received messages ---------------------------------------------------------------------

    def has_position(self, conversation_id: uuid.UUID, seq: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE conversation_id = ? AND seq = ?", (str(conversation_id), seq)
        ).fetchone()
        return row is not None

    def accepted_position(self, sender_device_id: uuid.UUID, client_message_id: bytes) -> tuple[uuid.UUID, int] | None:
        """Where a message id was accepted (decrypted), if it was."""
        row = self._db.execute(
            "SELECT conversation_id, seq FROM messages "
            "WHERE sender_device_id = ? AND client_message_id = ? AND failure IS NULL",
            (str(sender_device_id), b64e(client_message_id)),
        ).fetchone()
        return (uuid.UUID(row[0]), int(row[1])) if row else None

    def store_message(
        self,
        *,
        conversation_id: uuid.UUID,
        seq: int,
        sender_username: str,
        sender_device_id: uuid.UUID,
        client_message_id: bytes,
        epoch: int,
        created_at: str,
        payload: dict[str, Any] | None = None,
        failure: str | None = None,
        failure_detail: str | None = None,
        received_at: datetime | None = None,
    ) -> tuple[bool, int]:
        """Store a message at its position; `(stored, contiguous_seq)` after it.

        `stored` is False when the position is taken or the message id was already accepted (a
        duplicate): nothing changes. Exactly one of `payload` and `failure` must be given.
        """
        if (payload is None) == (failure is None):
            raise ValueError("give exactly one of payload and failure")
        when = (received_at or datetime.now(UTC)).isoformat()
        with self._transaction():
            try:
                self._db.execute(
                    "INSERT INTO messages (conversation_id, seq, sender_username, sender_device_id, client_message_id, "
                    "epoch, payload, failure, failure_detail, created_at, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(conversation_id),
                        seq,
                        sender_username,
                        str(sender_device_id),
                        b64e(client_message_id),
                        epoch,
                        json.dumps(payload, sort_keys=True, ensure_ascii=False) if payload is not None else None,
                        failure,
                        failure_detail,
                        created_at,
                        when,
                    ),
                )
            except sqlite3.IntegrityError:
                return False, self._contiguous(conversation_id)
            return True, self._advance(conversation_id)

    def _contiguous(self, conversation_id: uuid.UUID) -> int:
        row = self._db.execute(
            "SELECT contiguous_seq FROM cursors WHERE conversation_id = ?", (str(conversation_id),)
        ).fetchone()
        return int(row[0]) if row else 0

    def _advance(self, conversation_id: uuid.UUID) -> int:
        """Move the contiguous cursor over every held seq right above it (inside a transaction)."""
        key = str(conversation_id)
        self._db.execute("INSERT OR IGNORE INTO cursors (conversation_id) VALUES (?)", (key,))
        contiguous = self._contiguous(conversation_id)
        held = self._db.execute(
            "SELECT seq FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq", (key, contiguous)
        )
        for (seq,) in held:
            if seq != contiguous + 1:
                break
            contiguous = seq
        self._db.execute("UPDATE cursors SET contiguous_seq = ? WHERE conversation_id = ?", (contiguous, key))
        return contiguous

    def contiguous_seq(self, conversation_id: uuid.UUID) -> int:
        """The highest seq such that every message of the conversation up to it is stored."""
        return self._contiguous(conversation_id)

    def highest_seq(self, conversation_id: uuid.UUID) -> int:
        row = self._db.execute(
            "SELECT MAX(seq) FROM messages WHERE conversation_id = ?", (str(conversation_id),)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def messages(self, conversation_id: uuid.UUID, *, after: int = 0) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT conversation_id, seq, sender_username, sender_device_id, client_message_id, epoch, payload, "
            "failure, failure_detail, created_at, received_at FROM messages "
            "WHERE conversation_id = ? AND seq > ? ORDER BY seq",
            (str(conversation_id), after),
        ).fetchall()
        return [_stored_message(row) for row in rows]

    def conversation_ids(self) -> list[uuid.UUID]:
        rows = self._db.execute("SELECT conversation_id FROM cursors ORDER BY conversation_id").fetchall()
        return [uuid.UUID(row[0]) for row in rows]

    # -- read cursor -----------------------------------------------------------------------------

    def mark_read(self, conversation_id: uuid.UUID, seq: int) -> int:
        """Raise this device's read cursor (never lower it); the resulting cursor."""
        key = str(conversation_id)
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO cursors (conversation_id) VALUES (?)", (key,))
            self._db.execute("UPDATE cursors SET read_seq = MAX(read_seq, ?) WHERE conversation_id = ?", (seq, key))
            row = self._db.execute("SELECT read_seq FROM cursors WHERE conversation_id = ?", (key,)).fetchone()
        return int(row[0])

    def unreported_reads(self) -> list[tuple[uuid.UUID, int]]:
        rows = self._db.execute(
            "SELECT conversation_id, read_seq FROM cursors WHERE read_seq > read_reported_seq ORDER BY conversation_id"
        ).fetchall()
        return [(uuid.UUID(row[0]), int(row[1])) for row in rows]

    def read_reported(self, conversation_id: uuid.UUID, seq: int) -> None:
        self._db.execute(
            "UPDATE cursors SET read_reported_seq = MAX(read_reported_seq, ?) WHERE conversation_id = ?",
            (seq, str(conversation_id)),
        )

    # -- outbox ----------------------------------------------------------------------------------

    def outbox_add(
        self, *, conversation_id: uuid.UUID, client_message_id: bytes, envelope: dict[str, Any]
    ) -> OutboxEntry:
        queued_at = datetime.now(UTC).isoformat()
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO outbox (conversation_id, client_message_id, envelope, queued_at) VALUES (?, ?, ?, ?)",
                (str(conversation_id), b64e(client_message_id), json.dumps(envelope, sort_keys=True), queued_at),
            )
        position = cursor.lastrowid
        assert position is not None
        return OutboxEntry(position, conversation_id, client_message_id, dict(envelope), queued_at)

    def outbox(self, *, after_position: int = 0) -> list[OutboxEntry]:
        """Unsent envelopes in the order they were queued."""
        rows = self._db.execute(
            "SELECT position, conversation_id, client_message_id, envelope, queued_at FROM outbox "
            "WHERE position > ? ORDER BY position",
            (after_position,),
        ).fetchall()
        return [OutboxEntry(int(p), uuid.UUID(c), _b64d16(m), json.loads(e), str(q)) for p, c, m, e, q in rows]

    def outbox_get(self, position: int) -> OutboxEntry | None:
        entries = [e for e in self.outbox(after_position=position - 1) if e.position == position]
        return entries[0] if entries else None

    def outbox_replace(self, position: int, envelope: dict[str, Any]) -> None:
        """The message sealed again (a new epoch): same id, same place in the queue."""
        self._db.execute(
            "UPDATE outbox SET envelope = ? WHERE position = ?", (json.dumps(envelope, sort_keys=True), position)
        )

    def outbox_remove(self, position: int) -> None:
        """The server has the message (a `sent` frame) or refused it for good."""
        self._db.execute("DELETE FROM outbox WHERE position = ?", (position,))

    # -- receipts --------------------------------------------------------------------------------

    def record_receipt(
        self, *, conversation_id: uuid.UUID, username: str, device_id: uuid.UUID, delivered_seq: int, read_seq: int
    ) -> StoredReceipt:
        """Merge a reported cursor pair; cursors never move backwards (§6.5)."""
        key, device = str(conversation_id), str(device_id)
        with self._transaction():
            self._db.execute(
                "INSERT INTO receipts (conversation_id, device_id, username, delivered_seq, read_seq) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id, device_id) DO UPDATE SET "
                "delivered_seq = MAX(delivered_seq, excluded.delivered_seq), "
                "read_seq = MAX(read_seq, excluded.read_seq)",
                (key, device, username, delivered_seq, read_seq),
            )
            row = self._db.execute(
                "SELECT delivered_seq, read_seq FROM receipts WHERE conversation_id = ? AND device_id = ?",
                (key, device),
            ).fetchone()
        return StoredReceipt(username, device_id, int(row[0]), int(row[1]))

    def receipts(self, conversation_id: uuid.UUID) -> list[StoredReceipt]:
        rows = self._db.execute(
            "SELECT username, device_id, delivered_seq, read_seq FROM receipts WHERE conversation_id = ? "
            "ORDER BY username, device_id",
            (str(conversation_id),),
        ).fetchall()
        return [StoredReceipt(u, uuid.UUID(d), int(ds), int(rs)) for u, d, ds, rs in rows]

    # -- messages held for a missing key (protocol.md 4.8) ------------------------------------------

    def hold(self, envelope: Envelope) -> None:
        """Keep the envelope of a message stored as `missing_key`, to decrypt it once the key comes."""
        data = {
            "seq": envelope.seq,
            "conversation_id": str(envelope.conversation_id),
            "version": envelope.version,
            "epoch": envelope.epoch,
            "sender_device_id": str(envelope.sender_device_id),
            "sender_username": envelope.sender_username,
            "client_message_id": b64e(envelope.client_message_id),
            "nonce": b64e(envelope.nonce),
            "ciphertext": b64e(envelope.ciphertext),
            "signature": b64e(envelope.signature),
            "device_lists": b64e(envelope.device_lists),
            "created_at": envelope.created_at,
        }
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO held (conversation_id, seq, epoch, envelope) VALUES (?, ?, ?, ?)",
                (str(envelope.conversation_id), envelope.seq, envelope.epoch, json.dumps(data, sort_keys=True)),
            )

    def held_epochs(self) -> list[tuple[uuid.UUID, int]]:
        rows = self._db.execute("SELECT DISTINCT conversation_id, epoch FROM held ORDER BY conversation_id, epoch")
        return [(uuid.UUID(cid), int(epoch)) for cid, epoch in rows.fetchall()]

    def held(self, conversation_id: uuid.UUID, epoch: int) -> list[Envelope]:
        rows = self._db.execute(
            "SELECT envelope FROM held WHERE conversation_id = ? AND epoch = ? ORDER BY seq",
            (str(conversation_id), epoch),
        ).fetchall()
        return [Envelope.parse(json.loads(row[0])) for row in rows]

    def held_resolve(
        self,
        conversation_id: uuid.UUID,
        seq: int,
        *,
        payload: dict[str, Any] | None = None,
        failure: str | None = None,
        failure_detail: str | None = None,
    ) -> bool:
        """A held message was decrypted (`payload`) or failed for good (`failure`): update its row
        and forget the envelope. False (the row keeps `replayed`) if its message id was accepted
        elsewhere meanwhile."""
        if (payload is None) == (failure is None):
            raise ValueError("give exactly one of payload and failure")
        key = (str(conversation_id), seq)
        with self._transaction():
            self._db.execute("DELETE FROM held WHERE conversation_id = ? AND seq = ?", key)
            try:
                self._db.execute(
                    "UPDATE messages SET payload = ?, failure = ?, failure_detail = ? "
                    "WHERE conversation_id = ? AND seq = ?",
                    (
                        json.dumps(payload, sort_keys=True, ensure_ascii=False) if payload is not None else None,
                        failure,
                        failure_detail,
                        *key,
                    ),
                )
            except sqlite3.IntegrityError:
                self._db.execute(
                    "UPDATE messages SET failure = 'replayed', failure_detail = ? "
                    "WHERE conversation_id = ? AND seq = ?",
                    ("this message id was already accepted at another position", *key),
                )
                return False
        return True


def _b64d16(text: str) -> bytes:
    return b64d(text, length=16)


def _stored_message(row: tuple[Any, ...]) -> StoredMessage:
    cid, seq, username, device, message_id, epoch, payload, failure, detail, created_at, received_at = row
    return StoredMessage(
        conversation_id=uuid.UUID(cid),
        seq=int(seq),
        sender_username=str(username),
        sender_device_id=uuid.UUID(device),
        client_message_id=_b64d16(message_id),
        epoch=int(epoch),
        payload=json.loads(payload) if payload is not None else None,
        failure=failure,
        failure_detail=detail,
        created_at=str(created_at),
        received_at=str(received_at),
    )
