"""The local message store: positions, dedup by message id, the contiguous cursor, the ordered
ciphertext-only outbox, receipts that never move backwards, and all of it across a reopen."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.protocol import Envelope
from client.store.messages import MessageStore

CID = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")
ALICE_DEV = uuid.UUID("0f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2b")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MessageStore]:
    s = MessageStore.open_in(tmp_path)
    yield s
    s.close()


def put(store: MessageStore, seq: int, *, mid: bytes | None = None, **kwargs: Any) -> tuple[bool, int]:
    fields: dict[str, Any] = {"payload": {"type": "text", "body": f"m{seq}"}}
    fields.update(kwargs)
    return store.store_message(
        conversation_id=CID,
        seq=seq,
        sender_username="alice",
        sender_device_id=ALICE_DEV,
        client_message_id=mid or seq.to_bytes(16, "big"),
        epoch=1,
        created_at="2026-11-25T19:00:00Z",
        **fields,
    )


def test_the_store_file_is_private_and_in_wal_mode(store: MessageStore) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_contiguous_cursor_stops_at_a_gap_and_passes_it_once_filled(store: MessageStore) -> None:
    assert put(store, 1) == (True, 1)
    assert put(store, 3) == (True, 1)
    assert put(store, 4) == (True, 1)
    assert store.highest_seq(CID) == 4
    assert put(store, 2) == (True, 4)
    assert store.contiguous_seq(CID) == 4
    assert [m.seq for m in store.messages(CID)] == [1, 2, 3, 4]


def test_a_duplicate_position_or_message_id_is_not_stored_twice(store: MessageStore) -> None:
    assert put(store, 1, mid=b"a" * 16) == (True, 1)
    assert put(store, 1, mid=b"a" * 16) == (False, 1)
    assert put(store, 1, mid=b"b" * 16) == (False, 1)  # the position is taken
    assert put(store, 2, mid=b"a" * 16) == (False, 1)  # the id was accepted already
    assert store.accepted_position(ALICE_DEV, b"a" * 16) == (CID, 1)
    assert len(store.messages(CID)) == 1


def test_a_failure_is_stored_with_its_reason_and_does_not_block_the_genuine_id(store: MessageStore) -> None:
    assert put(store, 1, mid=b"x" * 16, payload=None, failure="bad_signature", failure_detail="forged") == (True, 1)
    assert store.accepted_position(ALICE_DEV, b"x" * 16) is None
    assert put(store, 2, mid=b"x" * 16) == (True, 2)
    first, second = store.messages(CID)
    assert first.payload is None and first.failure == "bad_signature" and first.text == "[undecryptable: bad_signature]"
    assert second.payload == {"type": "text", "body": "m2"} and second.failure is None


def test_exactly_one_of_payload_and_failure(store: MessageStore) -> None:
    with pytest.raises(ValueError):
        put(store, 1, payload=None)
    with pytest.raises(ValueError):
        put(store, 1, failure="tampered")


def test_outbox_keeps_queue_order_and_survives_a_reopen(tmp_path: Path) -> None:
    store = MessageStore.open_in(tmp_path)
    for i in range(3):
        store.outbox_add(conversation_id=CID, client_message_id=bytes([i]) * 16, envelope={"ciphertext": f"c{i}"})
    first = store.outbox()[0]
    store.outbox_remove(first.position)
    store.close()

    reopened = MessageStore.open_in(tmp_path)
    entries = reopened.outbox()
    assert [e.envelope["ciphertext"] for e in entries] == ["c1", "c2"]
    assert [e.client_message_id for e in entries] == [b"\x01" * 16, b"\x02" * 16]
    assert reopened.outbox(after_position=entries[0].position) == entries[1:]
    assert reopened.outbox_get(entries[1].position) == entries[1]
    assert reopened.outbox_get(first.position) is None
    # Positions are never reused, so a frame id `o<position>` is unique across restarts.
    new = reopened.outbox_add(conversation_id=CID, client_message_id=b"\x09" * 16, envelope={})
    assert new.position > entries[-1].position
    reopened.close()


def test_cursors_and_messages_survive_a_reopen(tmp_path: Path) -> None:
    store = MessageStore.open_in(tmp_path)
    put(store, 1)
    put(store, 2)
    store.mark_read(CID, 2)
    store.close()
    reopened = MessageStore.open_in(tmp_path)
    assert reopened.contiguous_seq(CID) == 2
    assert reopened.unreported_reads() == [(CID, 2)]
    assert reopened.conversation_ids() == [CID]
    reopened.close()


def test_read_cursor_never_moves_backwards_and_is_reported_once(store: MessageStore) -> None:
    assert store.mark_read(CID, 5) == 5
    assert store.mark_read(CID, 3) == 5
    assert store.unreported_reads() == [(CID, 5)]
    store.read_reported(CID, 5)
    assert store.unreported_reads() == []


def test_receipts_merge_and_never_move_backwards(store: MessageStore) -> None:
    bob = uuid.uuid4()
    store.record_receipt(conversation_id=CID, username="bob", device_id=bob, delivered_seq=5, read_seq=2)
    merged = store.record_receipt(conversation_id=CID, username="bob", device_id=bob, delivered_seq=4, read_seq=3)
    assert (merged.delivered_seq, merged.read_seq) == (5, 3)
    assert [(r.username, r.delivered_seq, r.read_seq) for r in store.receipts(CID)] == [("bob", 5, 3)]


def test_a_resealed_envelope_keeps_its_place_in_the_outbox(store: MessageStore) -> None:
    first = store.outbox_add(conversation_id=CID, client_message_id=b"\x01" * 16, envelope={"epoch": 1})
    store.outbox_add(conversation_id=CID, client_message_id=b"\x02" * 16, envelope={"epoch": 1})
    store.outbox_replace(first.position, {"epoch": 2})
    assert [e.envelope for e in store.outbox()] == [{"epoch": 2}, {"epoch": 1}]
    assert store.outbox()[0].client_message_id == b"\x01" * 16


def _envelope(seq: int, epoch: int = 1) -> Envelope:
    return Envelope(
        seq=seq,
        conversation_id=CID,
        version=1,
        epoch=epoch,
        sender_device_id=ALICE_DEV,
        sender_username="alice",
        client_message_id=seq.to_bytes(16, "big"),
        nonce=b"n" * 12,
        ciphertext=b"c" * 40,
        signature=b"s" * 64,
        created_at="2026-11-25T19:00:00Z",
        device_lists=b"l" * 41,
    )


def test_held_envelopes_survive_a_reopen_and_are_resolved_in_place(tmp_path: Path) -> None:
    store = MessageStore.open_in(tmp_path)
    for seq, epoch in ((1, 1), (2, 2), (3, 1)):
        put(store, seq, payload=None, failure="missing_key", failure_detail="no key")
        store.hold(_envelope(seq, epoch))
    store.close()
    store = MessageStore.open_in(tmp_path)

    assert store.held_epochs() == [(CID, 1), (CID, 2)]
    assert store.held(CID, 1) == [_envelope(1), _envelope(3)]
    assert store.held_resolve(CID, 1, payload={"type": "text", "body": "hello"})
    assert store.held_resolve(CID, 3, failure="bad_signature", failure_detail="forged")

    rows = {m.seq: (m.payload, m.failure) for m in store.messages(CID)}
    assert rows[1] == ({"type": "text", "body": "hello"}, None)
    assert rows[3] == (None, "bad_signature")
    assert rows[2] == (None, "missing_key")
    assert store.held_epochs() == [(CID, 2)]
    store.close()


def test_a_held_message_whose_id_was_accepted_elsewhere_becomes_a_replay(store: MessageStore) -> None:
    put(store, 1, mid=b"x" * 16)
    put(store, 2, mid=b"x" * 16, payload=None, failure="missing_key")
    store.hold(_envelope(2))

    assert not store.held_resolve(CID, 2, payload={"type": "text", "body": "again"})
    assert [(m.seq, m.failure) for m in store.messages(CID)] == [(1, None), (2, "replayed")]
    assert store.held_epochs() == []
