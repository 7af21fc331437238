from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyModelAdmin, hex_preview
from devices.models import Device, DeviceToken


@admin.register(Device)
class DeviceAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "user", "name", "status", "created_at", "last_seen_at")
    list_filter = ("status",)
    search_fields = ("user__username", "name")
    fields = ("id", "user", "name", "status", "vouched_by", "created_at", "last_seen_at", "x25519", "ed25519", "vouch")
    readonly_fields = fields

    @admin.display(description="x25519 public key")
    def x25519(self, obj: Device) -> str:
        return hex_preview(obj.x25519_public_key)

    @admin.display(description="ed25519 public key")
    def ed25519(self, obj: Device) -> str:
        return hex_preview(obj.ed25519_public_key)

    @admin.display(description="vouch signature")
    def vouch(self, obj: Device) -> str:
        return hex_preview(obj.vouch_signature)


@admin.register(DeviceToken)
class DeviceTokenAdmin(ReadOnlyModelAdmin):
    # The hash is not shown: nothing here should help anyone replay a credential.
    list_display = ("device", "created_at", "revoked_at")
    fields = ("device", "created_at", "revoked_at")
