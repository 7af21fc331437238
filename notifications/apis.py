"""Push notification endpoints (protocol.md 4.6): the device's push target and its mutes."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import InvalidRequestError
from common.fields import StrictCharField
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from devices.authentication import request_device
from notifications.errors import PushTargetNotFoundError
from notifications.models import PushTarget
from notifications.selectors import push_target_get
from notifications.services import (
    PUSH_TARGET_URL_PATTERN,
    conversation_mute,
    conversation_unmute,
    push_target_delete,
    push_target_register,
)


class PushTargetOutputSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField()
    url = serializers.CharField()
    created_at = serializers.DateTimeField()


class _WebPushKeysSerializer(serializers.Serializer[Any]):
    p256dh = StrictCharField(max_length=128)
    auth = StrictCharField(max_length=64)


@extend_schema_field(
    {
        "type": "string",
        "maxLength": 2048,
        "pattern": PUSH_TARGET_URL_PATTERN,
        "description": "http(s)://host[:port][/...], no credentials (else 400 push_target_url_refused, as for "
        "a host with a non-public address unless the server allows them)",
    }
)
class PushTargetUrlField(StrictCharField):
    """Checked by the service (push_target_url_check), which keeps its error code."""


class WebhookTargetInputSerializer(serializers.Serializer[Any]):
    """Schema only: a webhook (`keys`, if sent, are ignored)."""

    kind = serializers.ChoiceField(choices=[PushTarget.Kind.WEBHOOK.value])
    url = PushTargetUrlField(max_length=2048)
    keys = _WebPushKeysSerializer(required=False)


class WebPushTargetInputSerializer(serializers.Serializer[Any]):
    """Schema only: a browser's push subscription, with its keys."""

    kind = serializers.ChoiceField(choices=[PushTarget.Kind.WEBPUSH.value])
    url = PushTargetUrlField(max_length=2048)
    keys = _WebPushKeysSerializer()


class PushTargetApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        kind = serializers.ChoiceField(choices=PushTarget.Kind.values)
        url = PushTargetUrlField(max_length=2048)
        keys = _WebPushKeysSerializer(required=False)

    class RegisteredSerializer(PushTargetOutputSerializer):
        secret = serializers.CharField(allow_null=True)

    @extend_schema(
        operation_id="push_target_get",
        summary="This device's push target (without its secret)",
        responses={200: PushTargetOutputSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: Request) -> Response:
        target = push_target_get(device=request_device(request))
        if target is None:
            raise PushTargetNotFoundError()
        return Response(PushTargetOutputSerializer(target).data)

    @extend_schema(
        operation_id="push_target_put",
        summary="Register or replace this device's push target (a webhook's secret is shown once)",
        request=PolymorphicProxySerializer(
            component_name="PushTargetPut",
            serializers={
                PushTarget.Kind.WEBHOOK.value: WebhookTargetInputSerializer,
                PushTarget.Kind.WEBPUSH.value: WebPushTargetInputSerializer,
            },
            resource_type_field_name="kind",
        ),
        responses={200: RegisteredSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 409)},
    )
    def put(self, request: Request) -> Response:
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        keys: dict[str, str] = data.get("keys") or {}
        if data["kind"] == PushTarget.Kind.WEBPUSH and not ({"p256dh", "auth"} <= keys.keys()):
            raise InvalidRequestError({"keys": ["A webpush target needs keys.p256dh and keys.auth."]})
        registered = push_target_register(
            device=request_device(request),
            kind=data["kind"],
            url=data["url"],
            p256dh=keys.get("p256dh", ""),
            auth=keys.get("auth", ""),
        )
        body = dict(PushTargetOutputSerializer(registered.target).data)
        body["secret"] = registered.secret
        return Response(body)

    @extend_schema(
        operation_id="push_target_delete",
        summary="Stop push notifications to this device",
        responses={204: None, **error_responses(*AUTH_ERRORS, 404)},
    )
    def delete(self, request: Request) -> Response:
        push_target_delete(device=request_device(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PushConfigApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        webpush_vapid_public_key = serializers.CharField(allow_null=True)

    @extend_schema(
        operation_id="push_config",
        summary="What a client needs to subscribe (the VAPID public key, null if Web Push is off)",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        key = settings.E2EE_VAPID_PUBLIC_KEY if settings.E2EE_VAPID_PRIVATE_KEY else ""
        return Response({"webpush_vapid_public_key": key or None})


class ConversationMuteApi(APIView):
    @extend_schema(
        operation_id="conversation_mute",
        summary="Do not wake this device for the conversation",
        request=None,
        responses={204: None, **error_responses(*AUTH_ERRORS, 404)},
    )
    def put(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation_mute(device=request_device(request), conversation_id=conversation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="conversation_unmute",
        summary="Wake this device for the conversation again",
        responses={204: None, **error_responses(*AUTH_ERRORS, 404)},
    )
    def delete(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation_unmute(device=request_device(request), conversation_id=conversation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
