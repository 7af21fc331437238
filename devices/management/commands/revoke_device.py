"""`manage.py revoke_device DEVICE_ID`: what a device's own revocation does, by an operator."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices.models import Device, DeviceToken
from devices.services import device_revoke


class Command(BaseCommand):
    help = (
        "Revoke a device: status 'revoked' for good, every live token revoked, its WebSocket "
        "connections closed. Exactly what POST /api/v1/devices/{id}/revoke does (same service)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", type=uuid.UUID, help="the device's UUID")
        parser.add_argument("--reason", default="operator command", help="recorded in the log line")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        device = Device.objects.select_related("user").filter(pk=options["device_id"]).first()
        if device is None:
            raise CommandError(f"no device {options['device_id']}")
        if device.status == Device.Status.REVOKED:
            raise CommandError(f"device {device.id} is revoked already")
        live = DeviceToken.objects.filter(device=device, revoked_at__isnull=True).count()
        summary = (
            f"device {device.id} ({device.name!r}, {device.status}) of {device.user.username}: {live} live token(s)"
        )
        if options["dry_run"]:
            self.stdout.write(f"would revoke {summary}")
            return
        device_revoke(device=device, revoked_by_device=None, reason=options["reason"])
        self.stdout.write(f"revoked {summary}")
