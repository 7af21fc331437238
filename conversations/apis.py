"""Conversation endpoints (protocol.md section 4.3). All need an active device."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.serializers import UsernameField
from common.fields import Base64Field, CanonicalUUIDField, StrictBooleanField, StrictIntegerField, query_values
from common.ratelimit import ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from conversations.models import Conversation, KeyRequest
from conversations.selectors import (
    access_conversation,
    chat_key_epoch_get,
    conversation_get,
    conversation_list,
    key_request_list_open,
    link_missing_epochs,
    wrapped_key_list,
)
from conversations.serializers import (
    MAX_EPOCH,
    ConversationSerializer,
    EpochInputSerializer,
    HistoryKeyInputSerializer,
    WrappedKeySerializer,
)
from conversations.services import (
    LinkWrappedKeyUpload,
    chat_key_epoch_upload,
    conversation_create,
    conversation_member_add,
    conversation_member_remove,
    key_request_answer,
    key_request_file,
    link_keys_upload,
)
from devices.authentication import request_device
from devices.selectors import device_get_own

# Wrapped keys per link upload request, and epochs per missing-keys page (protocol.md 4.7).
LINK_KEYS_MAX = 200
# History keys (epochs x the newcomer's devices) in one member-add request (protocol.md 4.3).
MEMBER_HISTORY_KEYS_MAX = 10_000


class _ConversationCreateFields(serializers.Serializer[Any]):
    conversation_id = CanonicalUUIDField()
    epoch = EpochInputSerializer()
    share_history = StrictBooleanField(default=True)


class DirectConversationCreateSerializer(_ConversationCreateFields):
    """Schema only: a direct conversation names its one other member (else 400 direct_needs_one_peer)."""

    kind = serializers.ChoiceField(choices=[Conversation.Kind.DIRECT.value])
    members = serializers.ListField(child=UsernameField(), min_length=1, max_length=1)


class GroupConversationCreateSerializer(_ConversationCreateFields):
    """Schema only: a group names its other members (the creator may be listed too)."""

    kind = serializers.ChoiceField(choices=[Conversation.Kind.GROUP.value])
    members = serializers.ListField(child=UsernameField(), max_length=settings.E2EE_MAX_GROUP_MEMBERS - 1)


class ConversationListCreateApi(APIView):
    class InputSerializer(_ConversationCreateFields):
        kind = serializers.ChoiceField(choices=Conversation.Kind.choices)
        members = serializers.ListField(child=UsernameField())

    class ListOutputSerializer(serializers.Serializer[Any]):
        conversations = ConversationSerializer(many=True)

    @extend_schema(
        operation_id="conversations_list",
        summary="The account's conversations, newest first",
        responses={200: ListOutputSerializer, **error_responses(*AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        conversations = conversation_list(user=request_device(request).user)
        return Response(self.ListOutputSerializer({"conversations": conversations}).data)

    @extend_schema(
        operation_id="conversations_create",
        summary="Create a conversation with its first epoch",
        request=PolymorphicProxySerializer(
            component_name="ConversationCreate",
            serializers={
                Conversation.Kind.DIRECT.value: DirectConversationCreateSerializer,
                Conversation.Kind.GROUP.value: GroupConversationCreateSerializer,
            },
            resource_type_field_name="kind",
        ),
        responses={201: ConversationSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        ratelimit_hit("upload_device", request_device(request).id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        device = request_device(request)
        conversation = conversation_create(
            device=device,
            conversation_id=data["conversation_id"],
            kind=data["kind"],
            member_usernames=data["members"],
            epoch_number=data["epoch"]["number"],
            wrapped_keys=EpochInputSerializer.uploads(data["epoch"]),
            manifest=EpochInputSerializer.manifest_upload(data["epoch"]),
            share_history=data["share_history"],
        )
        conversation = conversation_get(user=device.user, conversation_id=conversation.pk)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    @extend_schema(
        operation_id="conversations_get",
        summary="One conversation of which the account is a member",
        responses={200: ConversationSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = conversation_get(user=request_device(request).user, conversation_id=conversation_id)
        return Response(ConversationSerializer(conversation).data)


class ChatKeyEpochUploadApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        conversation_id = CanonicalUUIDField()
        epoch = serializers.IntegerField(source="number")
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="conversations_epoch_upload",
        summary="Start a new ChatKey epoch",
        request=EpochInputSerializer,
        responses={201: OutputSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        ratelimit_hit("upload_device", request_device(request).id)
        payload = EpochInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        epoch = chat_key_epoch_upload(
            device=request_device(request),
            conversation_id=conversation_id,
            number=payload.validated_data["number"],
            wrapped_keys=EpochInputSerializer.uploads(payload.validated_data),
            manifest=EpochInputSerializer.manifest_upload(payload.validated_data),
        )
        return Response(self.OutputSerializer(epoch).data, status=status.HTTP_201_CREATED)


class ChatKeyEpochDetailApi(APIView):
    class RecipientSerializer(serializers.Serializer[Any]):
        username = serializers.CharField(source="recipient_device.user.username")
        device_id = CanonicalUUIDField(source="recipient_device.id")

    class OutputSerializer(serializers.Serializer[Any]):
        conversation_id = CanonicalUUIDField()
        epoch = serializers.IntegerField(source="number")
        created_by_device_id = CanonicalUUIDField(source="created_by_id")
        created_by_username = serializers.CharField(source="created_by.user.username")
        created_at = serializers.DateTimeField()
        manifest = Base64Field()
        manifest_signature = Base64Field()
        recipients = serializers.ListField(read_only=True)

    @extend_schema(
        operation_id="conversations_epoch_get",
        summary="One ChatKey epoch and the devices its key is wrapped for",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request, conversation_id: uuid.UUID, number: int) -> Response:
        conversation = access_conversation(user=request_device(request).user, conversation_id=conversation_id)
        epoch = chat_key_epoch_get(conversation=conversation, number=number)
        recipients = self.RecipientSerializer(epoch.wrapped_keys.all(), many=True).data
        return Response({**self.OutputSerializer(epoch).data, "recipients": recipients})


class ConversationMembersApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        username = UsernameField()
        history_keys = serializers.ListField(
            child=HistoryKeyInputSerializer(), required=False, max_length=MEMBER_HISTORY_KEYS_MAX
        )
        epoch = EpochInputSerializer(required=False)

    @extend_schema(
        operation_id="conversations_member_add",
        summary="Add a member, with its keys to the history or a new epoch",
        request=InputSerializer,
        responses={200: ConversationSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        device = request_device(request)
        ratelimit_hit("upload_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        conversation_member_add(
            device=device,
            conversation_id=conversation_id,
            username=data["username"],
            history_keys=HistoryKeyInputSerializer.uploads(data.get("history_keys", [])),
            epoch=EpochInputSerializer.epoch(data.get("epoch")),
        )
        conversation = conversation_get(user=device.user, conversation_id=conversation_id)
        return Response(ConversationSerializer(conversation).data)


class ConversationMemberApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        epoch = EpochInputSerializer(required=False)

    @extend_schema(
        operation_id="conversations_member_remove",
        summary="Remove a member (with the next epoch) or leave",
        request=InputSerializer,
        responses={204: None, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def delete(self, request: Request, conversation_id: uuid.UUID, username: str) -> Response:
        device = request_device(request)
        ratelimit_hit("upload_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        conversation_member_remove(
            device=device,
            conversation_id=conversation_id,
            username=username,
            epoch=EpochInputSerializer.epoch(payload.validated_data.get("epoch")),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WrappedKeyListApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        keys = WrappedKeySerializer(many=True)

    @extend_schema(
        operation_id="conversations_keys",
        summary="This device's own wrapped ChatKeys, by epoch",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        device = request_device(request)
        conversation = access_conversation(user=device.user, conversation_id=conversation_id)
        keys = wrapped_key_list(device=device, conversation=conversation)
        return Response(self.OutputSerializer({"keys": keys}).data)


class LinkMissingKeysApi(APIView):
    """Epochs of the account's conversations not yet wrapped for a device being linked, a page
    at a time: the approving device wraps and uploads them until none is left."""

    class QuerySerializer(serializers.Serializer[Any]):
        after = serializers.IntegerField(
            min_value=0, max_value=2**63 - 1, default=0, help_text="cursor: `next_after` of the previous page"
        )
        limit = serializers.IntegerField(min_value=1, max_value=LINK_KEYS_MAX, default=LINK_KEYS_MAX)

    class EpochRefSerializer(serializers.Serializer[Any]):
        conversation_id = CanonicalUUIDField()
        epoch = serializers.IntegerField(source="number")

    class OutputSerializer(serializers.Serializer[Any]):
        epochs = serializers.ListField()
        next_after = serializers.IntegerField()
        has_more = serializers.BooleanField()

    @extend_schema(
        operation_id="devices_link_missing_keys",
        summary="Epochs still lacking a wrapped key for a pending device of the account",
        parameters=[QuerySerializer],
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request, device_id: uuid.UUID) -> Response:
        query = self.QuerySerializer(data=query_values(request.query_params))
        query.is_valid(raise_exception=True)
        uploader = request_device(request)
        target = device_get_own(user=uploader.user, device_id=device_id)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        epochs = link_missing_epochs(device=target, after=after, limit=limit + 1)
        page = epochs[:limit]
        return Response(
            {
                "epochs": self.EpochRefSerializer(page, many=True).data,
                "next_after": page[-1].pk if page else after,
                "has_more": len(epochs) > limit,
            }
        )


class LinkWrappedKeySerializer(serializers.Serializer[Any]):
    """One ChatKey of an existing epoch wrapped for the device being linked (protocol.md 4.7)."""

    conversation_id = CanonicalUUIDField()
    epoch = StrictIntegerField(min_value=1, max_value=MAX_EPOCH)
    wrapped_key = Base64Field(length=80)
    signature = Base64Field(length=64)


class LinkKeysUploadApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        wrapped_keys = serializers.ListField(child=LinkWrappedKeySerializer(), min_length=1, max_length=LINK_KEYS_MAX)

    class OutputSerializer(serializers.Serializer[Any]):
        stored = serializers.IntegerField()

    @extend_schema(
        operation_id="devices_link_keys_upload",
        summary="Upload ChatKeys wrapped for a pending device being linked (idempotent, batches)",
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, device_id: uuid.UUID) -> Response:
        uploader = request_device(request)
        ratelimit_hit("upload_device", uploader.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        stored = link_keys_upload(
            uploader=uploader,
            device_id=device_id,
            keys=[LinkWrappedKeyUpload(**key) for key in payload.validated_data["wrapped_keys"]],
        )
        return Response({"stored": stored})


# -- key requests (protocol.md 4.8) ---------------------------------------------------------------

KEY_REQUESTS_MAX = 200


class KeyRequestSerializer(serializers.Serializer[Any]):
    """`KeyRequest` (protocol.md 4.8)."""

    request_id = CanonicalUUIDField(source="id")
    conversation_id = CanonicalUUIDField()
    epoch = serializers.IntegerField(source="epoch.number")
    username = serializers.CharField(source="device.user.username")
    device_id = CanonicalUUIDField()
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_status(self, request: KeyRequest) -> str:
        return "open" if request.served_at is None else "served"


class KeyRequestFileApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        epoch = StrictIntegerField(min_value=1, max_value=MAX_EPOCH)
        # The key this device holds for the epoch does not verify: drop it and ask again.
        refuse_held = StrictBooleanField(required=False, default=False)

    @extend_schema(
        operation_id="conversations_key_request_file",
        summary="Ask the other member devices to re-wrap an epoch's ChatKey for this device (idempotent)",
        request=InputSerializer,
        responses={
            200: KeyRequestSerializer,
            201: KeyRequestSerializer,
            **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 429),
        },
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        device = request_device(request)
        ratelimit_hit("key_request_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        filed = key_request_file(
            device=device,
            conversation_id=conversation_id,
            epoch=payload.validated_data["epoch"],
            refuse_held=payload.validated_data["refuse_held"],
        )
        return Response(
            KeyRequestSerializer(filed.request).data,
            status=status.HTTP_201_CREATED if filed.created else status.HTTP_200_OK,
        )


class KeyRequestListApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        key_requests = KeyRequestSerializer(many=True)

    @extend_schema(
        operation_id="key_requests_list",
        summary="Open key requests of other member devices this device may answer, oldest first",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        requests = key_request_list_open(device=request_device(request), limit=KEY_REQUESTS_MAX)
        return Response(self.OutputSerializer({"key_requests": requests}).data)


class KeyRequestAnswerApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        wrapped_key = Base64Field(length=80)
        signature = Base64Field(length=64)

    class OutputSerializer(serializers.Serializer[Any]):
        stored = serializers.BooleanField()

    @extend_schema(
        operation_id="key_requests_answer",
        summary="Answer a key request with the ChatKey wrapped for the requesting device",
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, request_id: uuid.UUID) -> Response:
        device = request_device(request)
        ratelimit_hit("key_request_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        stored = key_request_answer(
            device=device,
            request_id=request_id,
            wrapped_key=payload.validated_data["wrapped_key"],
            signature=payload.validated_data["signature"],
        )
        return Response({"stored": stored})
