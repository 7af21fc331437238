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


class DeviceListEntry(models.Model):
    """One version of an account's device list, signed by the account identity key
    (protocol.md 2.9). The entries form a hash chain: together they are the append-only log of
    every change to the account's devices. Stored as given; clients rebuild the signed bytes from
    these fields and verify the signature and the chain (the server has no keys to check with)."""

    class Change(models.TextChoices):
        CREATED = "created"
        LINKED = "linked"
        REVOKED = "revoked"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="device_list")
    version = models.PositiveIntegerField()
    prev_hash = models.BinaryField(max_length=32)
    change = models.CharField(max_length=8, choices=Change.choices)
    subject_device_id = models.UUIDField()
    actor_device_id = models.UUIDField()
    timestamp_ms = models.PositiveBigIntegerField()
    # [{"device_id", "x25519_public_key", "ed25519_public_key", "name"}] in the signed order
    # (ascending device id bytes), binary values as base64, exactly as received.
    devices = models.JSONField()
    signature = models.BinaryField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "version"], name="devicelistentry_unique_version"),
        ]

    def __str__(self) -> str:
        return f"device list v{self.version} of {self.user_id}"


class LinkRequest(models.Model):
    """A pending device asking to join its account (protocol.md 4.7): short-lived, single use.

    The server holds only `verifier_hash` = SHA-256 of a key derived from the one-time secret of
    the link code; the secret itself never reaches it. Once approved, the approval (the identity
    key HPKE-wrapped to the new device and a MAC under another key derived from the secret) is
    kept for the new device to fetch."""

    class Status(models.TextChoices):
        WAITING = "waiting"
        APPROVED = "approved"
        EXPIRED = "expired"

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="link_requests")
    verifier_hash = models.BinaryField(max_length=32)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.WAITING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    approved_by = models.ForeignKey(Device, on_delete=models.PROTECT, null=True, related_name="+")
    approved_at = models.DateTimeField(null=True)
    device_list_version = models.PositiveIntegerField(null=True)
    wrapped_identity_key = models.BinaryField(max_length=80, null=True)
    approval_mac = models.BinaryField(max_length=32, null=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"], name="linkrequest_status_expiry_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["device"], condition=Q(status="waiting"), name="linkrequest_one_waiting_per_device"
            ),
        ]

    def __str__(self) -> str:
        return f"link request of {self.device_id} ({self.status})"
