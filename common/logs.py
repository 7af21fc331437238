"""Structured logging: one JSON object per line on stderr, and one line per HTTP request.

Never log request or response bodies, tokens, keys or ciphertext: the request line carries only
method, path, status, duration and the authenticated device id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponseBase

request_logger = logging.getLogger("e2ee.request")


class JsonLineFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}`; pass fields as `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RequestLogMiddleware:
    """Logs `method path status duration_ms device_id` once per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
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
                }
            },
        )
        return response
