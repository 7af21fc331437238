from __future__ import annotations

from common.errors import ApiError


class DeviceNotActiveError(ApiError):
    status = 403
    code = "device_not_active"
    message = "This device is pending (not vouched yet) or revoked."


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
    message = "Only a pending device can be vouched for."


class DeviceAlreadyRevokedError(ApiError):
    status = 409
    code = "device_already_revoked"
    message = "This device is revoked already."
