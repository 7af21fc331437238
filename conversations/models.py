"""Conversations, their members, and ChatKey epochs with one wrapped key per recipient device."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Bytes of an epoch manifest the server stores (protocol.md 2.18, 4.3).
MANIFEST_MAX_BYTES = 65_536


class Conversation(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct"
        GROUP = "group"

    # Chosen by the creating device: it is bound into wrap_info and message headers (protocol.md 2).
    id = models.UUIDField(primary_key=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # "<smaller user id>:<larger user id>" for a direct conversation, so a pair has at most one.
    direct_key = models.CharField(max_length=64, null=True, unique=True)
    created_by = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    current_epoch = models.PositiveIntegerField(default=0)
    # Whether a member added later is given every earlier epoch (protocol.md 2.15); set at creation.
    share_history = models.BooleanField(default=True)
    # Last message sequence number handed out; incremented under this row's lock (messaging).
    last_seq = models.PositiveBigIntegerField(default=0)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="conversations")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="direct", direct_key__isnull=False) | Q(kind="group", direct_key__isnull=True),
                name="conversation_direct_key_iff_direct",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


class Membership(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_unique_pair"),
        ]


class ChatKeyEpoch(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="epochs")
    number = models.PositiveIntegerField()
    created_by = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # The creator's signed list of the devices the key was wrapped for (protocol.md 2.18), opaque
    # to the server; empty only for epochs stored before manifests existed (clients refuse them).
    manifest = models.BinaryField(max_length=MANIFEST_MAX_BYTES, default=b"")
    manifest_signature = models.BinaryField(max_length=64, default=b"")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "number"], name="chatkeyepoch_unique_number"),
        ]


class WrappedKey(models.Model):
    """The epoch's ChatKey sealed (HPKE) to one recipient device; opaque to the server."""

    epoch = models.ForeignKey(ChatKeyEpoch, on_delete=models.CASCADE, related_name="wrapped_keys")
    recipient_device = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="+")
    wrapping_device = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="+")
    wrapped_key = models.BinaryField(max_length=80)
    signature = models.BinaryField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["epoch", "recipient_device"], name="wrappedkey_unique_recipient"),
        ]


class KeyRequest(models.Model):
    """A device of a member lacks the ChatKey of an epoch (a late or failed upload) and asks the
    other member devices to re-wrap it (protocol.md 4.8). One per (epoch, device): filing again
    only re-announces it. Served once a wrapped key for that device and epoch is stored."""

    id = models.UUIDField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="key_requests")
    epoch = models.ForeignKey(ChatKeyEpoch, on_delete=models.CASCADE, related_name="key_requests")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="key_requests")
    created_at = models.DateTimeField(default=timezone.now)
    last_asked_at = models.DateTimeField(default=timezone.now)
    served_at = models.DateTimeField(null=True)
    served_by = models.ForeignKey("devices.Device", on_delete=models.SET_NULL, null=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["epoch", "device"], name="keyrequest_unique_epoch_device"),
        ]
        indexes = [
            models.Index(fields=["conversation", "served_at"], name="keyrequest_conversation_open"),
        ]
