from __future__ import annotations

from django.urls import path

from devices.apis import DeviceListApi, DeviceRevokeApi, DeviceVouchApi

urlpatterns = [
    path("devices", DeviceListApi.as_view(), name="devices"),
    path("devices/<uuid:device_id>/vouch", DeviceVouchApi.as_view(), name="device-vouch"),
    path("devices/<uuid:device_id>/revoke", DeviceRevokeApi.as_view(), name="device-revoke"),
]
