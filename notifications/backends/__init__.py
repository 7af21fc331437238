"""Delivery backends: one module per push target kind, each sending one content-free wake-up.

A backend raises `DeliveryFailedError` when the receiver did not accept the wake-up; the worker
(notifications/tasks.py) retries or dead-letters it. Nothing here touches the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from notifications.models import PushTarget


@dataclass(frozen=True)
class Wake:
    """What a receiver learns: that the device should connect. No sender, no text, no count."""

    notification_id: uuid.UUID
    device_id: uuid.UUID
    sent_at: datetime
    # Reserved: always null in protocol version 1 (docs/protocol.md 4.6).
    conversation_hint: str | None = None


def wake_send(*, target: PushTarget, wake: Wake) -> None:
    if target.kind == PushTarget.Kind.WEBHOOK:
        from notifications.backends.webhook import webhook_wake_send

        webhook_wake_send(url=target.url, secret=target.secret, wake=wake)
    else:
        # Imported only when used: the Web Push library pulls in its signing dependencies.
        from notifications.backends.webpush import webpush_wake_send

        webpush_wake_send(endpoint=target.url, p256dh=target.p256dh, auth=target.auth, wake=wake)
