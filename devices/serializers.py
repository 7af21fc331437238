"""Device objects of protocol.md section 3.2, shared by the accounts and devices APIs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.fields import Base64Field, CanonicalUUIDField, StrictCharField


class PublicDeviceSerializer(serializers.Serializer[Any]):
    """`PublicDevice`: what anyone may see."""

    device_id = CanonicalUUIDField(source="id")
    x25519_public_key = Base64Field()
    ed25519_public_key = Base64Field()
    vouch_signature = Base64Field(allow_null=True)


class OwnDeviceSerializer(PublicDeviceSerializer):
    """`OwnDevice`: what the account's own devices see."""

    name = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField(allow_null=True)


class DeviceKeysInputSerializer(serializers.Serializer[Any]):
    """The `device` object of a log-in; its validated data are the fields of `DeviceKeys`."""

    device_id = CanonicalUUIDField()
    name = StrictCharField(min_length=1, max_length=64)
    x25519_public_key = Base64Field(length=32)
    ed25519_public_key = Base64Field(length=32)
