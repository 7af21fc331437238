"""Conversation endpoints (protocol.md section 4.3). All need an active device."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.serializers import UsernameField
from common.fields import CanonicalUUIDField
from common.ratelimit import ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from conversations.models import Conversation
from conversations.selectors import access_conversation, conversation_get, conversation_list, wrapped_key_list
from conversations.serializers import ConversationSerializer, EpochInputSerializer, WrappedKeySerializer
from conversations.services import chat_key_epoch_upload, conversation_create
from devices.authentication import request_device


class ConversationListCreateApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        conversation_id = CanonicalUUIDField()
        kind = serializers.ChoiceField(choices=Conversation.Kind.choices)
        members = serializers.ListField(child=UsernameField())
        epoch = EpochInputSerializer()

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
        request=InputSerializer,
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
        )
        return Response(self.OutputSerializer(epoch).data, status=status.HTTP_201_CREATED)


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
