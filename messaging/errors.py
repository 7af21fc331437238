from __future__ import annotations

import uuid
from typing import ClassVar

from common.errors import ApiError


class EnvelopeUnsupportedVersionError(ApiError):
    status = 400
    code = "unsupported_version"
    message = "This envelope version is not supported (expected 1)."


class EnvelopeSenderMismatchError(ApiError):
    status = 400
    code = "sender_device_mismatch"
    message = "sender_device_id is not the authenticated device."


class EnvelopeStaleEpochError(ApiError):
    status = 409
    code = "stale_epoch"
    message = "The envelope's epoch is not the conversation's current epoch."

    def __init__(self, current_epoch: int) -> None:
        super().__init__(extra={"current_epoch": current_epoch})


class ClientMessageIdReusedError(ApiError):
    status = 409
    code = "client_message_id_reused"
    message = "This client_message_id was used for different content."


class EnvelopeTooLargeError(ApiError):
    status = 413
    code = "envelope_too_large"
    message = "The ciphertext is above the server's limit."

    def __init__(self, max_bytes: int) -> None:
        super().__init__(extra={"max_bytes": max_bytes})


class CursorBeyondLastSeqError(ApiError):
    """An `ack` or `read` past the newest message: storing it would skip every later message on
    catch-up and make the sender's receipts claim deliveries that never happened."""

    status = 409
    code = "cursor_beyond_last_seq"
    message = "The seq is beyond the conversation's last message."

    def __init__(self, conversation_id: uuid.UUID, last_seq: int) -> None:
        super().__init__(extra={"conversation_id": str(conversation_id), "last_seq": last_seq})


# --- the realtime gateway (protocol.md 6) ------------------------------------------------------
# An error that ends the connection names its WebSocket close code (protocol.md 6.2); autobahn
# (daphne) lets a server close only with 1000 or 3000-4999, hence 4xxx and not 1009 for size.
CLOSE_INVALID_TOKEN = 4401
CLOSE_NOT_ACTIVE = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_LARGE = 4413
CLOSE_ACK_TIMEOUT = 4420
CLOSE_UNSUPPORTED_VERSION = 4426


class GatewayClosingError(ApiError):
    """Answered with an `error` frame, then the connection is closed with `close_code`."""

    close_code: ClassVar[int]


class GatewayTokenInvalidError(GatewayClosingError):
    status = 401
    code = "invalid_token"
    message = "Unknown or revoked token."
    close_code = CLOSE_INVALID_TOKEN


class GatewayNotAuthenticatedError(GatewayClosingError):
    status = 401
    code = "not_authenticated"
    message = "Send a hello frame with the device token first."
    close_code = CLOSE_INVALID_TOKEN


class GatewayAuthTimeoutError(GatewayClosingError):
    status = 401
    code = "auth_timeout"
    message = "No hello frame in time."
    close_code = CLOSE_AUTH_TIMEOUT


class GatewayVersionUnsupportedError(GatewayClosingError):
    status = 400
    code = "unsupported_version"
    message = "This protocol version is not supported."
    close_code = CLOSE_UNSUPPORTED_VERSION

    def __init__(self, supported: list[int]) -> None:
        super().__init__(extra={"supported": supported})


class FrameInvalidError(ApiError):
    """Not a JSON object, or a member missing, ill-typed or out of range (`extra.fields`)."""

    status = 400
    code = "invalid_frame"
    message = "The frame is invalid."

    def __init__(self, fields: dict[str, list[str]] | None = None, *, frame_id: str | None = None) -> None:
        super().__init__(extra={"fields": fields} if fields else None)
        self.frame_id = frame_id


class FrameTypeUnknownError(ApiError):
    code = "unknown_frame_type"
    message = "Unknown frame type."


class FrameTooLargeError(GatewayClosingError):
    status = 413
    code = "frame_too_large"
    message = "The frame is larger than the server accepts."
    close_code = CLOSE_TOO_LARGE

    def __init__(self, max_bytes: int) -> None:
        super().__init__(extra={"max_bytes": max_bytes})


class AckTimeoutError(GatewayClosingError):
    status = 408
    code = "ack_timeout"
    message = "Pushed messages stayed unacknowledged through every retry; reconnect to resume."
    close_code = CLOSE_ACK_TIMEOUT


class SendsInFlightTooManyError(ApiError):
    status = 429
    code = "too_many_in_flight"
    message = "Too many sends are waiting for an answer on this connection."

    def __init__(self, max_in_flight: int) -> None:
        super().__init__(extra={"max_in_flight": max_in_flight})


class SendInternalError(ApiError):
    """The batch failed in the database (or a bug): the send may be retried safely."""

    status = 500
    code = "internal_error"
    message = "The server failed to store the message; resending it is safe."
