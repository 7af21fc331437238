"""The `Envelope` object (protocol.md 3.2): API answers and realtime pushes use this one encoder."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.fields import Base64Field, CanonicalUUIDField


class EnvelopeSerializer(serializers.Serializer[Any]):
    """Expects `sender_device.user` loaded (select_related) to name the sender without a query."""

    seq = serializers.IntegerField()
    conversation_id = CanonicalUUIDField()
    version = serializers.IntegerField()
    epoch = serializers.IntegerField()
    sender_device_id = CanonicalUUIDField()
    sender_username = serializers.CharField(source="sender_device.user.username")
    client_message_id = Base64Field()
    nonce = Base64Field()
    ciphertext = Base64Field()
    signature = Base64Field()
    device_lists = Base64Field()
    created_at = serializers.DateTimeField()
