"""`Authorization: Bearer <device token>` authentication for DRF."""

from __future__ import annotations

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.request import Request

from accounts.models import User
from devices.models import Device, DeviceToken
from devices.selectors import device_token_get_live
from devices.services import device_last_seen_is_due, device_last_seen_mark
from devices.tokens import token_hash, token_is_well_formed


def _invalid_token(message: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, code="invalid_token")


class DeviceTokenAuthentication(BaseAuthentication):
    """Sets `request.user` to the account and `request.auth` to the live `DeviceToken`.

    No header (or another scheme): anonymous, so a view needing a device answers
    401 `not_authenticated`. A bearer token that is malformed, unknown or revoked: 401
    `invalid_token`.
    """

    def authenticate(self, request: Request) -> tuple[User, DeviceToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise _invalid_token("Malformed bearer token.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise _invalid_token("Malformed bearer token.") from None
        if not token_is_well_formed(token):
            raise _invalid_token("Malformed bearer token.")
        live = device_token_get_live(token_hash=token_hash(token))
        if live is None or not live.device.user.is_active:
            raise _invalid_token("Unknown or revoked token.")
        now = timezone.now()
        if device_last_seen_is_due(device=live.device, now=now):
            device_last_seen_mark(device=live.device, now=now)
        return live.device.user, live

    def authenticate_header(self, request: Request) -> str:
        # A WWW-Authenticate value makes DRF answer 401 (not 403) to unauthenticated requests.
        return 'Bearer realm="api"'


def request_token(request: Request) -> DeviceToken:
    """The live token the request authenticated with (call only behind a device permission)."""
    auth = request.auth
    if not isinstance(auth, DeviceToken):  # a permission class should have refused already
        raise NotAuthenticated()
    return auth


def request_device(request: Request) -> Device:
    """The authenticated device (call only behind a device permission)."""
    return request_token(request).device
