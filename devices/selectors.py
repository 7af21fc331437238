"""Reads of devices and tokens. Selectors never write."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable

from django.db.models import Q

from accounts.models import User
from devices.device_list import DeviceListEntryData, ListedDevice
from devices.errors import DeviceNotFoundError
from devices.models import Device, DeviceListEntry, DeviceToken, LinkRequest
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


def device_list_entries(*, user: User, after: int = 0) -> list[DeviceListEntry]:
    """The account's signed device-list entries with `version > after`, oldest first: the log."""
    return list(DeviceListEntry.objects.filter(user=user, version__gt=after).order_by("version"))


def device_list_head(*, user_id: int) -> DeviceListEntry | None:
    """The account's newest device-list entry (None before its first)."""
    return DeviceListEntry.objects.filter(user_id=user_id).order_by("-version").first()


def device_list_entry_data(entry: DeviceListEntry, *, signature: bytes | None = None) -> DeviceListEntryData:
    """The stored entry as the fields its signature covers."""
    return DeviceListEntryData(
        version=entry.version,
        prev_hash=bytes(entry.prev_hash),
        change=entry.change,
        subject_device_id=entry.subject_device_id,
        actor_device_id=entry.actor_device_id,
        timestamp_ms=entry.timestamp_ms,
        devices=tuple(
            ListedDevice(
                device_id=uuid.UUID(d["device_id"]),
                x25519_public_key=base64.b64decode(d["x25519_public_key"]),
                ed25519_public_key=base64.b64decode(d["ed25519_public_key"]),
                name=d["name"],
            )
            for d in entry.devices
        ),
        signature=bytes(entry.signature) if signature is None else signature,
    )


def link_request_latest(*, device: Device) -> LinkRequest | None:
    """The device's newest link request, any status."""
    return LinkRequest.objects.filter(device=device).order_by("-created_at", "-id").first()


def device_ids_observing_account(*, user_id: int) -> list[uuid.UUID]:
    """Active devices that care about this account's device list: its own and those of everyone
    sharing a conversation with it (one query)."""
    return list(
        Device.objects.filter(status=Device.Status.ACTIVE)
        .filter(Q(user_id=user_id) | Q(user__memberships__conversation__memberships__user_id=user_id))
        .order_by("id")
        .values_list("id", flat=True)
        .distinct()
    )


def device_get_own(*, user: User, device_id: uuid.UUID) -> Device:
    """A device of this account, any status; another account's or an unknown one is
    `device_not_found` (404)."""
    device = Device.objects.filter(pk=device_id, user=user).first()
    if device is None:
        raise DeviceNotFoundError()
    return device
