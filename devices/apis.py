"""Device endpoints (protocol.md section 4.2)."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.fields import Base64Field
from common.ratelimit import ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from devices.authentication import request_device
from devices.permissions import IsAuthenticatedDevice
from devices.selectors import device_list_own
from devices.serializers import OwnDeviceSerializer
from devices.services import device_revoke_own, device_vouch


class DeviceListApi(APIView):
    # Pending devices may list the account's devices (to show what awaits approval).
    permission_classes = [IsAuthenticatedDevice]

    class OutputSerializer(serializers.Serializer[Any]):
        devices = OwnDeviceSerializer(many=True)

    @extend_schema(
        operation_id="devices_list",
        summary="Every device of the account, any status",
        responses={200: OutputSerializer, **error_responses(401, 405)},
    )
    def get(self, request: Request) -> Response:
        devices = device_list_own(user=request_device(request).user)
        return Response(self.OutputSerializer({"devices": devices}).data)


class DeviceVouchApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        vouch_signature = Base64Field(length=64)

    @extend_schema(
        operation_id="devices_vouch",
        summary="Approve a pending device of the account",
        request=InputSerializer,
        responses={200: OwnDeviceSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, device_id: uuid.UUID) -> Response:
        ratelimit_hit("link_account", request_device(request).user_id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = device_vouch(
            voucher=request_device(request),
            device_id=device_id,
            vouch_signature=payload.validated_data["vouch_signature"],
        )
        return Response(OwnDeviceSerializer(device).data)


class DeviceRevokeApi(APIView):
    """An active device revokes a device of its own account (itself included)."""

    @extend_schema(
        operation_id="devices_revoke",
        summary="Revoke a device of the account (itself included)",
        request=None,
        responses={200: OwnDeviceSerializer, **error_responses(*AUTH_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, device_id: uuid.UUID) -> Response:
        ratelimit_hit("link_account", request_device(request).user_id)
        device = device_revoke_own(revoker=request_device(request), device_id=device_id)
        return Response(OwnDeviceSerializer(device).data)
