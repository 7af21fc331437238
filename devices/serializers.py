"""Device objects of protocol.md section 3.2, shared by the accounts and devices APIs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from common.fields import Base64Field, CanonicalUUIDField, StrictCharField, StrictIntegerField
from devices.device_list import DeviceListEntryData, ListedDevice
from devices.models import DeviceListEntry


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


class ListedDeviceSerializer(serializers.Serializer[Any]):
    device_id = CanonicalUUIDField()
    x25519_public_key = Base64Field(length=32)
    ed25519_public_key = Base64Field(length=32)
    name = StrictCharField(min_length=1, max_length=64)


class DeviceListEntrySerializer(serializers.Serializer[Any]):
    """`DeviceListEntry` (protocol.md 3.2, 2.9): one signed version of an account's device list."""

    version = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    prev_hash = Base64Field(length=32)
    change = serializers.ChoiceField(choices=DeviceListEntry.Change.choices)
    subject_device_id = CanonicalUUIDField()
    actor_device_id = CanonicalUUIDField()
    timestamp_ms = StrictIntegerField(min_value=0, max_value=2**63 - 1)
    devices = serializers.ListField(child=ListedDeviceSerializer(), max_length=1000)
    signature = Base64Field(length=64)

    @staticmethod
    def entry_data(data: Mapping[str, Any]) -> DeviceListEntryData:
        return DeviceListEntryData(
            version=data["version"],
            prev_hash=data["prev_hash"],
            change=data["change"],
            subject_device_id=data["subject_device_id"],
            actor_device_id=data["actor_device_id"],
            timestamp_ms=data["timestamp_ms"],
            devices=tuple(ListedDevice(**device) for device in data["devices"]),
            signature=data["signature"],
        )


class StoredDeviceListEntrySerializer(serializers.Serializer[Any]):
    """A stored entry for output (the devices were validated when it was stored)."""

    version = serializers.IntegerField()
    prev_hash = Base64Field()
    change = serializers.CharField()
    subject_device_id = CanonicalUUIDField()
    actor_device_id = CanonicalUUIDField()
    timestamp_ms = serializers.IntegerField()
    devices = serializers.ListField(child=serializers.DictField(), help_text="`ListedDevice` objects")
    signature = Base64Field()
    created_at = serializers.DateTimeField()
