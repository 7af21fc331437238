"""What every realtime test checks at the end: each device holds, in seq order and exactly once,
every message of its conversations that the server acknowledged to a sender, and decrypted it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from harness.wsclient import RealtimeDevice


@dataclass(frozen=True)
class Expected:
    sender_device_id: uuid.UUID
    client_message_id: bytes


def acknowledged(devices: Sequence[RealtimeDevice]) -> dict[uuid.UUID, dict[int, Expected]]:
    """conversation -> seq -> message, from the senders' `sent` frames (or their catch-up echo)."""
    result: dict[uuid.UUID, dict[int, Expected]] = {}
    for device in devices:
        for record in device.sent.values():
            if record.seq is None:
                continue
            by_seq = result.setdefault(record.conversation_id, {})
            expected = Expected(device.device_id, record.client_message_id)
            assert by_seq.setdefault(record.seq, expected) == expected, f"two messages acknowledged as {record.seq}"
    return result


def missing_deliveries(devices: Sequence[RealtimeDevice]) -> int:
    """How many (message, entitled device) pairs are still not released to the device."""
    expected = acknowledged(devices)
    missing = 0
    for device in devices:
        for cid, state in device.conversations.items():
            top = max(expected.get(cid, {}), default=0)
            missing += max(0, top - state.contiguous)
    return missing


def assert_delivered_exactly_once_in_order(devices: Sequence[RealtimeDevice]) -> dict[uuid.UUID, int]:
    """Check every device against what the senders were acknowledged; messages released per device."""
    expected = acknowledged(devices)
    delivered: dict[uuid.UUID, int] = {}
    for device in devices:
        assert device.stats.decrypt_failures == [], (device.device_id, device.stats.decrypt_failures[:10])
        total = 0
        for cid, state in device.conversations.items():
            by_seq = expected.get(cid, {})
            others = {seq: e for seq, e in by_seq.items() if e.sender_device_id != device.device_id}
            released = state.released
            seqs = [r.seq for r in released]
            assert seqs == sorted(others), (
                f"device {device.device_id} conversation {cid}: released {len(seqs)} messages, "
                f"expected {len(others)}; first differences at "
                f"{sorted(set(seqs) ^ set(others))[:10]}"
            )
            for record in released:
                e = others[record.seq]
                assert (record.sender_device_id, record.client_message_id) == (
                    e.sender_device_id,
                    e.client_message_id,
                ), f"seq {record.seq} is another message than the one acknowledged to its sender"
            total += len(released)
        delivered[device.device_id] = total
    return delivered
