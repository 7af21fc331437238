"""Joining what senders and receivers recorded: per-message latency, delivery completeness."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.wsclient import ReceivedRecord, SentRecord


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (a value that was actually observed); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


MessageKey = tuple[uuid.UUID, bytes]  # (sender device, client message id)


@dataclass(frozen=True)
class SendPoint:
    """A sent message's timestamps, by the key its receivers know it under."""

    first_sent_ns: int
    seq: int | None


def send_points(sent: Iterable[tuple[uuid.UUID, SentRecord]]) -> dict[MessageKey, SendPoint]:
    points = {}
    for device_id, record in sent:
        if record.first_sent_ns is not None:
            points[(device_id, record.client_message_id)] = SendPoint(record.first_sent_ns, record.seq)
    return points


def latencies_ms(points: dict[MessageKey, SendPoint], received: Iterable[ReceivedRecord]) -> list[float]:
    """Send (frame first written) -> decrypted at a recipient, one value per (message, recipient)."""
    result = []
    for record in received:
        point = points.get((record.sender_device_id, record.client_message_id))
        if point is not None:
            result.append((record.decrypted_ns - point.first_sent_ns) / 1e6)
    return result
