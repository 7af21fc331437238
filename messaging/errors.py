from __future__ import annotations

import uuid

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
