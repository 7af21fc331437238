"""Errors of the push notification endpoints (protocol.md 3.1, 4.6)."""

from __future__ import annotations

from common.errors import ApiError


class PushTargetUrlRefusedError(ApiError):
    """The URL is not http(s), or names a loopback/private address the server may not call."""

    status = 400
    code = "push_target_url_refused"
    message = "This push target URL is not allowed."


class PushTargetNotFoundError(ApiError):
    status = 404
    code = "push_target_not_found"
    message = "This device has no push target."


class WebPushNotConfiguredError(ApiError):
    """The server has no VAPID key, so it cannot send Web Push."""

    status = 409
    code = "webpush_not_configured"
    message = "This server does not send Web Push (no VAPID key configured)."


class DeliveryFailedError(Exception):
    """A backend could not deliver (not an API error: the worker retries or dead-letters it).
    `permanent`: retrying cannot help (the push service says the subscription is gone)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
