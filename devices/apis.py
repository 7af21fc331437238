"""Device endpoints (protocol.md section 4.2)."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import user_get_active
from common.fields import Base64Field, CanonicalUUIDField, query_values
from common.ratelimit import client_ip, ratelimit_hit
from common.schema import AUTH_ERRORS, BODY_ERRORS, error_responses
from devices.authentication import request_device
from devices.errors import LinkRequestNotFoundError
from devices.models import LinkRequest
from devices.permissions import IsAuthenticatedDevice
from devices.selectors import device_list_entries, device_list_own, link_request_latest
from devices.serializers import DeviceListEntrySerializer, OwnDeviceSerializer, StoredDeviceListEntrySerializer
from devices.services import device_link_approve, device_revoke_own, link_request_open

# Entries per device-list page; a client asks again with `after` for more.
DEVICE_LIST_PAGE = 1000


class DeviceListApi(APIView):
    # Active devices only: a pending device (someone who knows the password) learns nothing
    # about the account's devices before it is approved.

    class OutputSerializer(serializers.Serializer[Any]):
        devices = OwnDeviceSerializer(many=True)

    @extend_schema(
        operation_id="devices_list",
        summary="Every device of the account, any status",
        responses={200: OutputSerializer, **error_responses(*AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        devices = device_list_own(user=request_device(request).user)
        return Response(self.OutputSerializer({"devices": devices}).data)


class DeviceRevokeApi(APIView):
    """An active device revokes a device of its own account (itself included)."""

    class InputSerializer(serializers.Serializer[Any]):
        device_list = DeviceListEntrySerializer(required=False)

    @extend_schema(
        operation_id="devices_revoke",
        summary="Revoke a device of the account (itself included), with its signed device-list entry",
        request=InputSerializer,
        responses={200: OwnDeviceSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 429)},
    )
    def post(self, request: Request, device_id: uuid.UUID) -> Response:
        ratelimit_hit("link_account", request_device(request).user_id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        raw = payload.validated_data.get("device_list")
        device = device_revoke_own(
            revoker=request_device(request),
            device_id=device_id,
            entry=DeviceListEntrySerializer.entry_data(raw) if raw is not None else None,
        )
        return Response(OwnDeviceSerializer(device).data)


class LinkRequestApi(APIView):
    """The new (pending) device's side of linking: open a link request, then poll it."""

    permission_classes = [IsAuthenticatedDevice]

    class InputSerializer(serializers.Serializer[Any]):
        verifier_hash = Base64Field(length=32)

    class ApprovalSerializer(serializers.Serializer[Any]):
        approved_by_device_id = CanonicalUUIDField(source="approved_by_id")
        identity_key = Base64Field(source="device.user.identity_key")
        device_list_version = serializers.IntegerField()
        wrapped_identity_key = Base64Field()
        approval_mac = Base64Field()

    class OutputSerializer(serializers.Serializer[Any]):
        device_id = CanonicalUUIDField()
        status = serializers.ChoiceField(choices=LinkRequest.Status.choices)
        created_at = serializers.DateTimeField()
        expires_at = serializers.DateTimeField()
        approval = serializers.SerializerMethodField()

        def get_approval(self, request: LinkRequest) -> dict[str, Any] | None:
            if request.status != LinkRequest.Status.APPROVED:
                return None
            return dict(LinkRequestApi.ApprovalSerializer(request).data)

        def to_representation(self, instance: LinkRequest) -> dict[str, Any]:
            data = super().to_representation(instance)
            if data["status"] == LinkRequest.Status.WAITING and instance.expires_at <= timezone.now():
                data["status"] = LinkRequest.Status.EXPIRED
            return dict(data)

    @extend_schema(
        operation_id="devices_link_request_open",
        summary="A pending device asks to join its account (shows its link code meanwhile)",
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(401, 405, *BODY_ERRORS, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        device = request_device(request)
        ratelimit_hit("link_request_device", device.id)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        link_request = link_request_open(device=device, verifier_hash=payload.validated_data["verifier_hash"])
        return Response(self.OutputSerializer(link_request).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="devices_link_request_get",
        summary="This device's newest link request and, once approved, its approval",
        responses={200: OutputSerializer, **error_responses(401, 404, 405)},
    )
    def get(self, request: Request) -> Response:
        link_request = link_request_latest(device=request_device(request))
        if link_request is None:
            raise LinkRequestNotFoundError()
        return Response(self.OutputSerializer(link_request).data)


class DeviceLinkApproveApi(APIView):
    """An active device approves a pending device of the account with its link code."""

    class InputSerializer(serializers.Serializer[Any]):
        verifier = Base64Field(length=32)
        vouch_signature = Base64Field(length=64)
        device_list = DeviceListEntrySerializer()
        wrapped_identity_key = Base64Field(length=80)
        approval_mac = Base64Field(length=32)

    @extend_schema(
        operation_id="devices_link_approve",
        summary="Approve a pending device: signed device list entry and the identity key wrapped to it",
        request=InputSerializer,
        responses={200: OwnDeviceSerializer, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 404, 409, 410, 429)},
    )
    def post(self, request: Request, device_id: uuid.UUID) -> Response:
        # Keyed on what an attacker cannot rotate cheaply: the device being linked (so on the
        # account) and the address.
        ratelimit_hit("link_code_device", device_id)
        ratelimit_hit("link_code_ip", client_ip(request))
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        link_request = device_link_approve(
            approver=request_device(request),
            device_id=device_id,
            verifier=data["verifier"],
            vouch_signature=data["vouch_signature"],
            entry=DeviceListEntrySerializer.entry_data(data["device_list"]),
            wrapped_identity_key=data["wrapped_identity_key"],
            approval_mac=data["approval_mac"],
        )
        return Response(OwnDeviceSerializer(link_request.device).data)


class _AfterQuerySerializer(serializers.Serializer[Any]):
    after = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, default=0, help_text="only versions above this (default 0)"
    )


class UserDeviceListApi(APIView):
    """The account's signed device list: every version, i.e. the log of its device changes."""

    # Public like the directory: whoever wraps keys for the account's devices must check it.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer[Any]):
        username = serializers.CharField()
        entries = StoredDeviceListEntrySerializer(many=True)

    @extend_schema(
        operation_id="users_device_list",
        summary="A user's signed device list entries with version > after, oldest first (public)",
        auth=[],
        parameters=[_AfterQuerySerializer],
        responses={200: OutputSerializer, **error_responses(404, 405)},
    )
    def get(self, request: Request, username: str) -> Response:
        query = _AfterQuerySerializer(data=query_values(request.query_params))
        query.is_valid(raise_exception=True)
        user = user_get_active(username=username)
        entries = device_list_entries(user=user, after=query.validated_data["after"])[:DEVICE_LIST_PAGE]
        return Response(self.OutputSerializer({"username": user.username, "entries": entries}).data)
