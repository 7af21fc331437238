"""The base class of every error the API answers on purpose.

Each app declares its own subclasses in `<app>/errors.py`, named `<Thing><Problem>Error`; the
`code` of a class never changes meaning once shipped (docs/protocol.md section 3.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ApiError(Exception):
    """An error rendered as `{"code", "message", "extra"}` with `status`."""

    status: int = 400
    code: str = "invalid_request"
    message: str = "The request is invalid."

    def __init__(self, message: str | None = None, *, extra: Mapping[str, Any] | None = None) -> None:
        if message is not None:
            self.message = message
        self.extra: dict[str, Any] = dict(extra or {})
        super().__init__(self.message)


class RequestTooLargeError(ApiError):
    """The body is larger than the server reads at all (DATA_UPLOAD_MAX_MEMORY_SIZE)."""

    status = 413
    code = "request_too_large"
    message = "The request body is too large."

    def __init__(self, max_bytes: int) -> None:
        super().__init__(extra={"max_bytes": max_bytes})


class InvalidRequestError(ApiError):
    """A field is missing, ill-typed or out of range; `extra.fields` maps field to messages."""

    status = 400
    code = "invalid_request"
    message = "The request is invalid."

    def __init__(self, fields: Mapping[str, Sequence[str]], message: str | None = None) -> None:
        super().__init__(message, extra={"fields": {name: list(msgs) for name, msgs in fields.items()}})
