from __future__ import annotations

from common.errors import ApiError


class DeviceNotActiveError(ApiError):
    status = 403
    code = "device_not_active"
    message = "This device is pending (not linked yet) or revoked."


class DeviceNotFoundError(ApiError):
    status = 404
    code = "device_not_found"
    message = "No such device."


class DeviceIdTakenError(ApiError):
    status = 409
    code = "device_id_taken"
    message = "This device id exists with other keys."


class DeviceNotPendingError(ApiError):
    status = 409
    code = "device_not_pending"
    message = "Only a pending device can be linked."


class DeviceAlreadyRevokedError(ApiError):
    status = 409
    code = "device_already_revoked"
    message = "This device is revoked already."


class LinkRequestNotFoundError(ApiError):
    status = 404
    code = "link_request_not_found"
    message = "This device has no link request, or it expired."


class LinkCodeInvalidError(ApiError):
    status = 403
    code = "link_code_invalid"
    message = "The link code does not match this device's link request."


class LinkCodeUsedError(ApiError):
    status = 409
    code = "link_code_used"
    message = "This link code was used already."


class StaleDeviceListError(ApiError):
    status = 409
    code = "stale_device_list"
    message = "The device list entry does not follow the account's current one."

    def __init__(self, current_version: int) -> None:
        super().__init__(extra={"current_version": current_version})


class DeviceListMismatchError(ApiError):
    status = 409
    code = "device_list_mismatch"
    message = "The device list entry does not list exactly the account's devices after this change."


class LinkKeysIncompleteError(ApiError):
    status = 409
    code = "link_keys_incomplete"
    message = "Some ChatKey epochs of the account's conversations are not wrapped for the new device yet."

    def __init__(self, missing: int) -> None:
        super().__init__(extra={"missing": missing})


class LinkCodeExpiredError(ApiError):
    status = 410
    code = "link_code_expired"
    message = "This link code has expired; show a new one on the new device."
