"""The message log: append-only per conversation, numbered by `seq`."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Message(models.Model):
    """One stored envelope. Everything but the numbering is opaque to the server."""

    # No separate FK indexes: the two unique constraints below start with these columns, and
    # (conversation, seq) is also the index history pages are read by (seq > after, ascending).
    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    version = models.PositiveSmallIntegerField()
    epoch = models.PositiveIntegerField()
    sender_device = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="+", db_index=False)
    client_message_id = models.BinaryField(max_length=16)
    nonce = models.BinaryField(max_length=12)
    ciphertext = models.BinaryField()
    signature = models.BinaryField(max_length=64)
    # The device lists its sender saw (protocol.md 2.19): opaque here, bound by the signed header.
    device_lists = models.BinaryField(max_length=65_536, default=b"")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_unique_seq"),
            # The idempotency key of a send (protocol.md 4.4).
            models.UniqueConstraint(fields=["sender_device", "client_message_id"], name="message_unique_client_id"),
        ]

    def __str__(self) -> str:
        return f"message {self.seq} of {self.conversation_id}"


class DeliveryCursor(models.Model):
    """How far one device has got in one conversation: the receipts, and where catch-up resumes.

    `delivered_seq` is the highest seq the device acknowledged (cumulative: it holds every message
    up to it); `read_seq` the highest it reported read. Both only ever move forward. One row per
    (device, conversation), written in batches by the realtime gateway (messaging/cursors.py).
    """

    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+", db_index=False)
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    delivered_seq = models.PositiveBigIntegerField(default=0)
    read_seq = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Also the index of "this device's cursors" (catch-up on connect).
            models.UniqueConstraint(fields=["device", "conversation"], name="deliverycursor_unique_pair"),
        ]

    def __str__(self) -> str:
        return f"cursor {self.delivered_seq}/{self.read_seq} of {self.device_id} in {self.conversation_id}"
