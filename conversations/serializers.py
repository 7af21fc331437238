"""Conversation objects of protocol.md section 3.2 and the shared epoch input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import User
from common import protocol
from common.fields import Base64Field, CanonicalUUIDField, StrictIntegerField
from conversations.models import MANIFEST_MAX_BYTES
from conversations.services import EpochManifestUpload, EpochUpload, HistoryKeyUpload, WrappedKeyUpload

MAX_EPOCH = protocol.MAX_EPOCH  # the largest epoch number stored (common/protocol.py)


@extend_schema_field(OpenApiTypes.STR)
class UsernameRelatedField(serializers.SlugRelatedField[User]):
    """A related user as its username (in the schema: a string)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("slug_field", "username")
        super().__init__(**kwargs)


class ConversationSerializer(serializers.Serializer[Any]):
    """`Conversation`; expects `members` prefetched (see conversations.selectors)."""

    conversation_id = CanonicalUUIDField(source="id")
    kind = serializers.CharField()
    members = UsernameRelatedField(many=True, read_only=True)
    current_epoch = serializers.IntegerField()
    last_seq = serializers.IntegerField()
    share_history = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WrappedKeyInputSerializer(serializers.Serializer[Any]):
    device_id = CanonicalUUIDField()
    wrapped_key = Base64Field(length=80)
    signature = Base64Field(length=64)


class EpochInputSerializer(serializers.Serializer[Any]):
    """`{"number", "wrapped_keys": [...], "manifest", "manifest_signature"}`, the body of an epoch
    upload and part of a creation or membership change (protocol.md 2.18: opaque to the server)."""

    number = StrictIntegerField(min_value=0, max_value=MAX_EPOCH)
    wrapped_keys = WrappedKeyInputSerializer(many=True)
    manifest = Base64Field(min_length=1, max_length=MANIFEST_MAX_BYTES)
    manifest_signature = Base64Field(length=64)

    @staticmethod
    def uploads(data: Mapping[str, Any]) -> list[WrappedKeyUpload]:
        return [WrappedKeyUpload(**key) for key in data["wrapped_keys"]]

    @staticmethod
    def manifest_upload(data: Mapping[str, Any]) -> EpochManifestUpload:
        return EpochManifestUpload(manifest=data["manifest"], signature=data["manifest_signature"])

    @staticmethod
    def epoch(data: Mapping[str, Any] | None) -> EpochUpload | None:
        if data is None:
            return None
        return EpochUpload(
            number=data["number"],
            wrapped_keys=EpochInputSerializer.uploads(data),
            manifest=EpochInputSerializer.manifest_upload(data),
        )


class HistoryKeyInputSerializer(serializers.Serializer[Any]):
    epoch = StrictIntegerField(min_value=1, max_value=MAX_EPOCH)
    device_id = CanonicalUUIDField()
    wrapped_key = Base64Field(length=80)
    signature = Base64Field(length=64)

    @staticmethod
    def uploads(data: list[Mapping[str, Any]]) -> list[HistoryKeyUpload]:
        return [HistoryKeyUpload(**key) for key in data]


class WrappedKeySerializer(serializers.Serializer[Any]):
    """`WrappedKey`, only ever the requesting device's own."""

    epoch = serializers.IntegerField(source="epoch.number")
    wrapped_key = Base64Field()
    signature = Base64Field()
    wrapped_by_device_id = CanonicalUUIDField(source="wrapping_device.id")
    wrapped_by_username = serializers.CharField(source="wrapping_device.user.username")
    # The epoch's manifest (protocol.md 2.18), to check before accepting the key.
    epoch_created_by_device_id = CanonicalUUIDField(source="epoch.created_by.id")
    epoch_created_by_username = serializers.CharField(source="epoch.created_by.user.username")
    manifest = Base64Field(source="epoch.manifest")
    manifest_signature = Base64Field(source="epoch.manifest_signature")
