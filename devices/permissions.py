"""Who may call a view: any authenticated device, or only an active one."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from devices.errors import DeviceNotActiveError
from devices.models import Device, DeviceToken


class IsAuthenticatedDevice(BasePermission):
    """Any device with a live token, pending ones included (me, device list, logout)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        # False makes DRF answer 401 not_authenticated (authenticators exist, none succeeded).
        return isinstance(request.auth, DeviceToken)


class IsActiveDevice(IsAuthenticatedDevice):
    """The default: an active device; pending or revoked ones get 403 device_not_active."""

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if not isinstance(token, DeviceToken):
            return False
        if token.device.status != Device.Status.ACTIVE:
            raise DeviceNotActiveError()
        return True
