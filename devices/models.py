"""Devices (each its own cryptographic identity) and their bearer tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Device(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        REVOKED = "revoked"

    # Chosen by the device itself (a random UUID v4), so it can be bound into signed bytes
    # before the server has seen it.
    id = models.UUIDField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=64)
    x25519_public_key = models.BinaryField(max_length=32)
    ed25519_public_key = models.BinaryField(max_length=32)
    # Ed25519 signature by the account identity key over the vouch message (protocol.md 2.1);
    # null while pending. Stored, never verified: clients verify.
    vouch_signature = models.BinaryField(max_length=64, null=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    # The active device that approved this one; null for an account's first device.
    vouched_by = models.ForeignKey("self", on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            # "active devices of these users": epoch coverage, directory, fan-out.
            models.Index(fields=["user", "status"], name="device_user_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="active") | Q(vouch_signature__isnull=False),
                name="device_active_has_vouch",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class DeviceToken(models.Model):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device"],
                condition=Q(revoked_at__isnull=True),
                name="devicetoken_one_live_per_device",
            ),
        ]

    def __str__(self) -> str:
        return f"token of {self.device_id}"
