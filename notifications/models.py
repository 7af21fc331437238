"""Push notifications to devices that are not connected: content-free wake-ups (docs/protocol.md 4.6).

A device registers at most one `PushTarget` (a signed webhook or a Web Push subscription). When a
message is committed for it while it is offline, the notification worker opens one
`Notification` per device (coalescing: further messages join the open one), delivers it once
through the target's backend, retries with backoff and finally records a `DeadLetter` that an
operator can replay from the admin.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class PushTarget(models.Model):
    """Where to wake one device. Replaced as a whole; deleted with the device."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        WEBPUSH = "webpush"

    device = models.OneToOneField("devices.Device", on_delete=models.CASCADE, related_name="push_target")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # The webhook URL, or the push service's subscription endpoint.
    url = models.URLField(max_length=2048)
    # webhook: the HMAC key the server generated (shown to the device once). webpush: empty.
    secret = models.CharField(max_length=64, blank=True, default="")
    # webpush only: the subscription's public keys (unused by a payload-less push, kept so a
    # later version can send an encrypted payload without asking every browser again).
    p256dh = models.CharField(max_length=128, blank=True, default="")
    auth = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind} target of {self.device_id}"


class ConversationMute(models.Model):
    """A device asked not to be woken for one conversation (its messages are still delivered)."""

    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+", db_index=False)
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "conversation"], name="conversationmute_unique_pair"),
        ]

    def __str__(self) -> str:
        return f"mute of {self.conversation_id} for {self.device_id}"


class Notification(models.Model):
    """One wake-up of one device; its id is the notification id on the wire (receivers dedupe on
    it). Every message for the device while it is `pending` or `retrying` joins it."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for the coalescing delay, then the first attempt
        SENDING = "sending"  # claimed by a worker until `lease_until`
        RETRYING = "retrying"  # an attempt failed; the next one is scheduled
        SENT = "sent"
        SKIPPED = "skipped"  # at fire time: connected, nothing undelivered, muted or no target
        DEAD = "dead"  # every attempt failed: see its DeadLetter

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+", db_index=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    # The backend used by the last attempt ("webhook" or "webpush"; "" before the first).
    backend = models.CharField(max_length=8, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # sending: the claiming worker's lease ends; pending, retrying: the next attempt is due (the
    # stalled-task sweep re-enqueues what is overdue). Null: due now.
    lease_until = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["device", "status"], name="notification_device_status"),
            # The stalled-task sweep (every few seconds) reads only unfinished notifications by due
            # time, never the sent ones kept for days.
            models.Index(
                fields=["lease_until"],
                name="notification_unfinished_due",
                condition=models.Q(status__in=["pending", "retrying", "sending"]),
            ),
        ]
        constraints = [
            # At most one notification per device waits for its first attempt: the coalescing key.
            models.UniqueConstraint(
                fields=["device"], condition=models.Q(status="pending"), name="notification_one_pending_per_device"
            ),
        ]

    def __str__(self) -> str:
        return f"notification {self.id} ({self.status})"


class DeadLetter(models.Model):
    """A notification whose every attempt failed, for operators to inspect and replay."""

    notification = models.OneToOneField(Notification, on_delete=models.CASCADE, related_name="dead_letter")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+")
    backend = models.CharField(max_length=8)
    attempts = models.PositiveIntegerField()
    last_error = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    # Set when an operator replays it; a replay that fails again sets it back to null.
    replayed_at = models.DateTimeField(null=True, blank=True)
    replays = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"dead letter of {self.notification_id}"
