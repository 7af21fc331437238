"""The Web Push backend: a payload-less push (a "tickle") to the browser's push service, with VAPID.

The one module that sends Web Push. pywebpush signs the VAPID JWT (transport authentication of
the server to the push service) with its own dependencies; this module imports none of them
directly, and sends no payload, so nothing is encrypted here: the service worker that receives
the push connects to the server and fetches what is new (protocol.md 4.6).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]

from notifications.backends import Wake
from notifications.errors import DeliveryFailedError

# How long the push service keeps an undelivered push (seconds): a wake-up older than this is moot.
PUSH_TTL_S = 3600


def webpush_wake_send(*, endpoint: str, p256dh: str, auth: str, wake: Wake) -> None:
    if not settings.E2EE_VAPID_PRIVATE_KEY:
        raise DeliveryFailedError("no VAPID key configured", permanent=True)
    # No "keys": without data, pywebpush sends an empty body and encrypts nothing.
    subscription: dict[str, Any] = {"endpoint": endpoint}
    try:
        webpush(
            subscription_info=subscription,
            data=None,
            vapid_private_key=settings.E2EE_VAPID_PRIVATE_KEY,
            vapid_claims={"sub": settings.E2EE_VAPID_SUBJECT},
            ttl=PUSH_TTL_S,
            timeout=settings.E2EE_NOTIFY_HTTP_TIMEOUT_S,
            headers={"Urgency": "high", "Topic": wake.notification_id.hex[:32]},
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        # 404/410: the subscription expired or was withdrawn; retrying cannot help.
        raise DeliveryFailedError(f"push service answered {status}", permanent=status in (404, 410)) from exc
    except Exception as exc:
        raise DeliveryFailedError(f"push request failed: {type(exc).__name__}") from exc
