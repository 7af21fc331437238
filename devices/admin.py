"""Devices and tokens for operators: looking, and one write, revocation, through the service."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyModelAdmin, hex_preview
from devices.errors import DeviceAlreadyRevokedError
from devices.models import Device, DeviceToken
from devices.services import device_revoke


@admin.register(Device)
class DeviceAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "user", "name", "status", "vouched_by", "created_at", "last_seen_at")
    list_filter = ("status", "created_at", "last_seen_at")
    list_select_related = ("user", "vouched_by")
    search_fields = ("=id", "user__username", "name")
    fields = ("id", "user", "name", "status", "vouched_by", "created_at", "last_seen_at", "x25519", "ed25519", "vouch")
    readonly_fields = fields
    actions = ["revoke_devices"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Device]:
        return super().get_queryset(request).select_related("user", "vouched_by")

    @admin.display(description="x25519 public key")
    def x25519(self, obj: Device) -> str:
        return hex_preview(obj.x25519_public_key)

    @admin.display(description="ed25519 public key")
    def ed25519(self, obj: Device) -> str:
        return hex_preview(obj.ed25519_public_key)

    @admin.display(description="vouch signature")
    def vouch(self, obj: Device) -> str:
        return hex_preview(obj.vouch_signature)

    @admin.action(description="Revoke the selected devices (tokens revoked, sockets closed)")
    def revoke_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        revoked = skipped = 0
        operator = getattr(request.user, "username", "?")
        for device in queryset:
            try:
                device_revoke(device=device, revoked_by_device=None, reason=f"admin action by {operator}")
            except DeviceAlreadyRevokedError:
                skipped += 1
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} device(s); {skipped} already revoked.", messages.SUCCESS)


@admin.register(DeviceToken)
class DeviceTokenAdmin(ReadOnlyModelAdmin):
    # The hash is not shown: nothing here should help anyone replay a credential.
    list_display = ("device", "device_user", "created_at", "revoked_at")
    list_filter = ("created_at", "revoked_at")
    list_select_related = ("device", "device__user")
    search_fields = ("=device__id", "device__user__username")
    fields = ("device", "created_at", "revoked_at")

    @admin.display(description="user", ordering="device__user__username")
    def device_user(self, obj: DeviceToken) -> str:
        return obj.device.user.username
