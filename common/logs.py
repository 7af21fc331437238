"""Structured logging: one JSON object per line on stderr, and one line per HTTP request.

Never log request or response bodies, tokens, keys or ciphertext: the request line carries only
method, path, status, duration, the authenticated device id and the request id.

Request ids: a well-formed `X-Request-ID` from the client or the proxy in front is kept, anything
else is replaced by a fresh one; it is echoed in the response's `X-Request-ID` and added to every
log line written while the request is handled (a context variable, so it follows the request into
the threads Django runs sync code in).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponseBase

request_logger = logging.getLogger("e2ee.request")

REQUEST_ID_HEADER = "X-Request-ID"
# Letters, digits and `._:-`, 8 to 128 characters: a UUID, a ULID, a proxy's hex id. Nothing that
# could forge a log line or smuggle a secret-sized blob of arbitrary bytes.
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def request_id_from(header: str | None) -> str:
    """The client's id when well formed, else a fresh random one (32 hex digits)."""
    if header and _WELL_FORMED_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class JsonLineFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}`; pass fields as `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RequestLogMiddleware:
    """Assigns the request id and logs `method path status duration_ms device_id request_id`
    once per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        reset = current_request_id.set(request_id)
        try:
            response = self._respond(request, started, request_id)
        finally:
            current_request_id.reset(reset)
        return response

    def _respond(self, request: HttpRequest, started: float, request_id: str) -> HttpResponseBase:
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        # DRF copies the authenticated DeviceToken onto the Django request as `auth`.
        token = getattr(request, "auth", None)
        device_id = getattr(token, "device_id", None)
        request_logger.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "device_id": str(device_id) if device_id else None,
                    "request_id": request_id,
                }
            },
        )
        return response
