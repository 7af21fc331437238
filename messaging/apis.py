"""Message endpoints (protocol.md section 4.4). All need an active device of a member."""

from __future__ import annotations

import math
import uuid
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.fields import Base64Field, CanonicalUUIDField, StrictIntegerField, query_values
from common.metrics import messages_sent_inc
from common.protocol import MAX_EPOCH, MAX_SEQ
from common.ratelimit import ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, base64_pattern, error_responses
from conversations.selectors import access_conversation
from devices.authentication import request_device
from messaging.selectors import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, message_history_page
from messaging.serializers import EnvelopeSerializer
from messaging.services import MAX_ATTACHMENTS, MAX_DEVICE_LISTS_BYTES, EnvelopeContent, envelope_send


@extend_schema_field(
    {"type": "integer", "enum": [1], "description": "Envelope version: 1 (else 400 unsupported_version)."}
)
class EnvelopeVersionField(StrictIntegerField):
    """Any integer is read: a version other than 1 is `unsupported_version`, not a malformed
    request. The schema says which one is accepted."""


_CIPHERTEXT_MIN_BYTES = 16


@extend_schema_field(
    {
        "type": "string",
        "pattern": base64_pattern(min_length=_CIPHERTEXT_MIN_BYTES),
        "maxLength": 4 * math.ceil(settings.E2EE_MAX_CIPHERTEXT_BYTES / 3),
        "description": "standard base64 with padding; above the server's E2EE_MAX_CIPHERTEXT_BYTES "
        "(this maxLength) 413 envelope_too_large",
    }
)
class CiphertextField(Base64Field):
    """Read without an upper bound: the service answers 413 envelope_too_large above it."""


class MessageListCreateApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        version = EnvelopeVersionField()
        epoch = StrictIntegerField(min_value=0, max_value=MAX_EPOCH)
        sender_device_id = CanonicalUUIDField()
        client_message_id = Base64Field(length=16)
        nonce = Base64Field(length=12)
        ciphertext = CiphertextField(min_length=_CIPHERTEXT_MIN_BYTES)
        signature = Base64Field(length=64)
        # The device lists the sender saw (protocol.md 2.19): opaque to the server.
        device_lists = Base64Field(min_length=1, max_length=MAX_DEVICE_LISTS_BYTES)
        # Media blob ids (protocol.md 4.5) the encrypted payload refers to; optional.
        attachments = serializers.ListField(
            child=CanonicalUUIDField(), max_length=MAX_ATTACHMENTS, required=False, default=list
        )

    class HistoryQuerySerializer(serializers.Serializer[Any]):
        after = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, default=0)
        limit = serializers.IntegerField(min_value=1, max_value=HISTORY_MAX_LIMIT, default=HISTORY_DEFAULT_LIMIT)

    class HistoryOutputSerializer(serializers.Serializer[Any]):
        messages = EnvelopeSerializer(many=True)
        has_more = serializers.BooleanField()
        next_after = serializers.IntegerField()

    @extend_schema(
        operation_id="messages_send",
        summary="Append an envelope to the conversation's log (idempotent on client_message_id)",
        request=InputSerializer,
        responses={
            201: OpenApiResponse(EnvelopeSerializer, description="Stored; `seq` assigned."),
            200: OpenApiResponse(EnvelopeSerializer, description="An identical resend: the original envelope."),
            **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429),
        },
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        ratelimit_hit("send_device", request_device(request).id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        sender_device_id = data.pop("sender_device_id")
        data["attachments"] = tuple(data.get("attachments") or ())
        result = envelope_send(
            device=request_device(request),
            sender_device_id=sender_device_id,
            content=EnvelopeContent(conversation_id=conversation_id, **data),
        )
        if result.created:  # committed: envelope_send owns its transaction
            messages_sent_inc()
        return Response(
            EnvelopeSerializer(result.message).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="messages_history",
        summary="Envelopes with seq > after, ascending",
        parameters=[HistoryQuerySerializer],
        responses={200: HistoryOutputSerializer, **error_responses(*AUTH_ERRORS, 400, 404)},
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        device = request_device(request)
        conversation = access_conversation(user=device.user, conversation_id=conversation_id)
        query = self.HistoryQuerySerializer(data=query_values(request.query_params))
        query.is_valid(raise_exception=True)
        page = message_history_page(conversation=conversation, **query.validated_data)
        return Response(self.HistoryOutputSerializer(page).data)
