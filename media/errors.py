from __future__ import annotations

from common.errors import ApiError


class MediaNotFoundError(ApiError):
    """Unknown blob, or one this device may not see (or attach): a 404 either way."""

    status = 404
    code = "media_not_found"
    message = "No such media blob."


class MediaTooLargeError(ApiError):
    status = 413
    code = "media_too_large"
    message = "The declared length is above the server's limit for one blob."

    def __init__(self, max_bytes: int) -> None:
        super().__init__(extra={"max_bytes": max_bytes})


class MediaQuotaExceededError(ApiError):
    status = 409
    code = "media_quota_exceeded"
    message = "This upload would take the account above its media quota."

    def __init__(self, *, quota_bytes: int, used_bytes: int) -> None:
        super().__init__(extra={"quota_bytes": quota_bytes, "used_bytes": used_bytes})


class MediaLengthMismatchError(ApiError):
    status = 400
    code = "media_length_mismatch"
    message = "The uploaded body's length differs from the declared length."

    def __init__(self, *, declared_length: int, received_length: int | None) -> None:
        super().__init__(extra={"declared_length": declared_length, "received_length": received_length})


class MediaNotUploadedError(ApiError):
    status = 409
    code = "media_not_uploaded"
    message = "Nothing has been uploaded for this blob yet."


class MediaAlreadyUploadedError(ApiError):
    status = 409
    code = "media_already_uploaded"
    message = "This blob's upload is complete; blobs are immutable."


class MediaLinkInvalidError(ApiError):
    """A server upload or download URL that is forged, for another blob, or expired."""

    status = 404
    code = "media_link_invalid"
    message = "This media link is invalid or has expired."
