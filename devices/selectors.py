"""Reads of devices and tokens. Selectors never write."""

from __future__ import annotations

from collections.abc import Iterable

from accounts.models import User
from devices.models import Device, DeviceToken
from devices.tokens import token_hash, token_is_well_formed


def device_token_get_live(*, token_hash: str) -> DeviceToken | None:
    """The unrevoked token with this hash, with its device and user (one query)."""
    return (
        DeviceToken.objects.select_related("device__user")
        .filter(token_hash=token_hash, revoked_at__isnull=True)
        .first()
    )


def device_list_own(*, user: User) -> list[Device]:
    """Every device of the account, any status, oldest first."""
    return list(Device.objects.filter(user=user).order_by("created_at", "id"))


def device_list_active(*, user: User) -> list[Device]:
    """The account's active devices, oldest first: what anyone may see."""
    return list(Device.objects.filter(user=user, status=Device.Status.ACTIVE).order_by("created_at", "id"))


def device_list_active_of_users(*, user_ids: Iterable[int]) -> list[Device]:
    """Active devices of several accounts, with their users (one query)."""
    return list(
        Device.objects.select_related("user")
        .filter(user_id__in=list(user_ids), status=Device.Status.ACTIVE)
        .order_by("user_id", "created_at", "id")
    )


def device_token_get_live_by_token(*, token: str) -> DeviceToken | None:
    """Like `device_token_get_live` from the token itself; None when it is malformed."""
    if not token_is_well_formed(token):
        return None
    return device_token_get_live(token_hash=token_hash(token))
