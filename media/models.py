"""Encrypted attachments: opaque ciphertext blobs in object storage, keyed by server-chosen ids.

The server knows a blob's length, who uploaded it and which conversations' messages reference it;
the key, digest, name, type and plaintext size travel only inside encrypted messages.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class MediaBlob(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"  # slot created, upload not (yet) confirmed
        COMPLETE = "complete"  # stored object verified to have the declared length

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    uploader_device = models.ForeignKey(
        "devices.Device", on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    length = models.PositiveBigIntegerField()  # declared ciphertext bytes
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The quota sum (per uploader) and the orphan scan (by age).
            models.Index(fields=["uploader", "state"], name="mediablob_uploader_state"),
            models.Index(fields=["created_at"], name="mediablob_created_at"),
        ]

    def __str__(self) -> str:
        return f"blob {self.id} ({self.length} bytes, {self.state})"

    @property
    def storage_name(self) -> str:
        return f"blobs/{self.id}"


class MediaReference(models.Model):
    """A message of a conversation names the blob: its members may download it."""

    blob = models.ForeignKey(MediaBlob, on_delete=models.CASCADE, related_name="references", db_index=False)
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey("messaging.Message", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Also the index of "references of this blob" (access check, orphan scan).
            models.UniqueConstraint(fields=["blob", "message"], name="mediareference_unique_pair"),
        ]

    def __str__(self) -> str:
        return f"blob {self.blob_id} in message {self.message_id}"
