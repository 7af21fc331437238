from __future__ import annotations

from django.urls import path

from devices.apis import (
    DeviceLinkApproveApi,
    DeviceListApi,
    DeviceRevokeApi,
    LinkRequestApi,
    UserDeviceListApi,
)

urlpatterns = [
    path("devices", DeviceListApi.as_view(), name="devices"),
    path("devices/link", LinkRequestApi.as_view(), name="device-link-request"),
    path("devices/<uuid:device_id>/link/approve", DeviceLinkApproveApi.as_view(), name="device-link-approve"),
    path("users/<str:username>/device-list", UserDeviceListApi.as_view(), name="user-device-list"),
    path("devices/<uuid:device_id>/revoke", DeviceRevokeApi.as_view(), name="device-revoke"),
]
