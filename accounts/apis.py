"""Account endpoints (protocol.md section 4.1)."""

from __future__ import annotations

import hashlib
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import user_directory_get
from accounts.serializers import NewPasswordField, UsernameField
from accounts.services import user_identity_reset, user_register
from common.fields import Base64Field, StrictCharField
from common.ratelimit import client_ip, ratelimit_hit
from common.schema import BODY_ERRORS, error_responses
from devices.authentication import request_device, request_token
from devices.permissions import IsAuthenticatedDevice
from devices.serializers import (
    DeviceKeysInputSerializer,
    DeviceListEntrySerializer,
    OwnDeviceSerializer,
    PublicDeviceSerializer,
)
from devices.services import DeviceKeys, device_login, device_token_revoke


class AccountOutputSerializer(serializers.Serializer[Any]):
    """`{"username", "identity_key", "device": OwnDevice}` from `{"user", "device"}`."""

    username = serializers.CharField(source="user.username")
    identity_key = Base64Field(source="user.identity_key")
    device = OwnDeviceSerializer()


class RegisterDeviceInputSerializer(DeviceKeysInputSerializer):
    # The first device is vouched by the identity key it has just generated.
    vouch_signature = Base64Field(length=64)


class RegisterApi(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer[Any]):
        username = UsernameField()
        password = NewPasswordField()
        identity_key = Base64Field(length=32)
        device = RegisterDeviceInputSerializer()
        device_list = DeviceListEntrySerializer(required=False)

    class OutputSerializer(AccountOutputSerializer):
        token = serializers.CharField()

    @extend_schema(
        operation_id="accounts_register",
        summary="Create an account with its first (active) device",
        auth=[],
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(*BODY_ERRORS, 405, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        ratelimit_hit("register_ip", client_ip(request))
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        device = dict(data["device"])
        vouch_signature = device.pop("vouch_signature")
        registration = user_register(
            username=data["username"],
            password=data["password"],
            identity_key=data["identity_key"],
            device=DeviceKeys(**device),
            vouch_signature=vouch_signature,
            device_list=DeviceListEntrySerializer.entry_data(data["device_list"]) if "device_list" in data else None,
        )
        return Response(self.OutputSerializer(registration).data, status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer[Any]):
        # No username format check: a malformed name is just wrong credentials.
        username = StrictCharField(trim_whitespace=False, max_length=150)
        password = StrictCharField(trim_whitespace=False)
        device = DeviceKeysInputSerializer()

    class OutputSerializer(serializers.Serializer[Any]):
        device = OwnDeviceSerializer()
        token = serializers.CharField()

    @extend_schema(
        operation_id="accounts_login",
        summary="Log a device in (a new device is pending until vouched)",
        auth=[],
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(*BODY_ERRORS, 401, 405, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        ratelimit_hit("login_ip", client_ip(request))
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        # Hashed: any string may be sent as a username, and the cache needs no copy of names.
        ratelimit_hit("login_account", hashlib.sha256(data["username"].encode()).hexdigest()[:32])
        issued = device_login(username=data["username"], password=data["password"], keys=DeviceKeys(**data["device"]))
        return Response(self.OutputSerializer(issued).data, status=status.HTTP_201_CREATED)


class ResetIdentityApi(APIView):
    """Every device lost (protocol.md 4.8): a new identity key and first device, by password."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer[Any]):
        # No username format check: a malformed name is just wrong credentials.
        username = StrictCharField(trim_whitespace=False, max_length=150)
        password = StrictCharField(trim_whitespace=False)
        identity_key = Base64Field(length=32)
        device = RegisterDeviceInputSerializer()
        device_list = DeviceListEntrySerializer()

    class OutputSerializer(AccountOutputSerializer):
        token = serializers.CharField()

    @extend_schema(
        operation_id="accounts_reset_identity",
        summary="Replace the identity key and every device of an account (all devices lost)",
        auth=[],
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*BODY_ERRORS, 401, 405, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        ratelimit_hit("login_ip", client_ip(request))
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        ratelimit_hit("login_account", hashlib.sha256(data["username"].encode()).hexdigest()[:32])
        device = dict(data["device"])
        vouch_signature = device.pop("vouch_signature")
        reset = user_identity_reset(
            username=data["username"],
            password=data["password"],
            identity_key=data["identity_key"],
            device=DeviceKeys(**device),
            vouch_signature=vouch_signature,
            device_list=DeviceListEntrySerializer.entry_data(data["device_list"]),
        )
        return Response(self.OutputSerializer(reset).data)


class LogoutApi(APIView):
    permission_classes = [IsAuthenticatedDevice]

    @extend_schema(
        operation_id="accounts_logout",
        summary="Revoke the token used",
        request=None,
        responses={204: None, **error_responses(401, 405)},
    )
    def post(self, request: Request) -> Response:
        device_token_revoke(token=request_token(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    permission_classes = [IsAuthenticatedDevice]

    @extend_schema(
        operation_id="accounts_me",
        summary="The account and the authenticated device",
        responses={200: AccountOutputSerializer, **error_responses(401, 405)},
    )
    def get(self, request: Request) -> Response:
        device = request_device(request)
        return Response(AccountOutputSerializer({"user": device.user, "device": device}).data)


class UserDirectoryApi(APIView):
    # Public: a sender needs a contact's identity key and devices before any exchange.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer[Any]):
        username = serializers.CharField(source="user.username")
        identity_key = Base64Field(source="user.identity_key")
        devices = PublicDeviceSerializer(many=True)

    @extend_schema(
        operation_id="users_directory",
        summary="A user's identity key and active devices (public)",
        auth=[],
        responses={200: OutputSerializer, **error_responses(404, 405)},
    )
    def get(self, request: Request, username: str) -> Response:
        return Response(self.OutputSerializer(user_directory_get(username=username)).data)
