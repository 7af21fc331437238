"""The signed webhook backend: POST a small JSON wake-up, signed with HMAC-SHA256 (protocol.md 4.6).

Only the standard library's `hmac` signs: a keyed hash for the receiver to check, no encryption.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
from django.conf import settings

from notifications.backends import Wake
from notifications.errors import DeliveryFailedError

SIGNATURE_HEADER = "X-E2EE-Signature"
TIMESTAMP_HEADER = "X-E2EE-Timestamp"
NOTIFICATION_ID_HEADER = "X-E2EE-Notification-Id"


def wake_body(wake: Wake) -> bytes:
    return json.dumps(
        {
            "type": "wake",
            "notification_id": str(wake.notification_id),
            "device_id": str(wake.device_id),
            "conversation_hint": wake.conversation_hint,
            "sent_at": wake.sent_at.isoformat().replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    ).encode("ascii")


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256, keyed with the target's secret, of `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode("ascii"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def webhook_wake_send(*, url: str, secret: str, wake: Wake) -> None:
    body = wake_body(wake)
    timestamp = str(int(wake.sent_at.timestamp()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
        NOTIFICATION_ID_HEADER: str(wake.notification_id),
    }
    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=settings.E2EE_NOTIFY_HTTP_TIMEOUT_S, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        raise DeliveryFailedError(f"webhook request failed: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        # 410 Gone: the receiver tells us to stop; nothing else is taken as permanent.
        raise DeliveryFailedError(f"webhook answered {response.status_code}", permanent=response.status_code == 410)
