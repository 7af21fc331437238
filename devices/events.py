"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Literal, TypedDict

from devices.models import Device, DeviceToken


class TokenRevokedEvent(TypedDict):
    """A token stopped working (log-out): sockets authenticated with it close with 4401."""

    type: Literal["token.revoked"]
    token_id: int


def token_revoked_event(token: DeviceToken) -> TokenRevokedEvent:
    return {"type": "token.revoked", "token_id": token.pk}


class DeviceRevokedEvent(TypedDict):
    """The device was revoked (by a device of its account or by an operator): every connection
    of it must be closed (protocol.md 6.1: `invalid_token`, close 4401). Channels dispatches
    `type` "device.revoked" to a consumer's `device_revoked` handler."""

    type: Literal["device.revoked"]
    device_id: str


def device_revoked_event(*, device_id: uuid.UUID) -> DeviceRevokedEvent:
    return {"type": "device.revoked", "device_id": str(device_id)}


class DeviceSignedOutEvent(TypedDict):
    """The device's tokens were revoked without revoking the device (its account was
    deactivated): close every connection of it like a revoked token (`invalid_token`, 4401)."""

    type: Literal["device.signed_out"]
    device_id: str
    reason: str


def device_signed_out_event(*, device_id: uuid.UUID, reason: str) -> DeviceSignedOutEvent:
    return {"type": "device.signed_out", "device_id": str(device_id), "reason": reason}


class LinkRequestedDevice(TypedDict):
    device_id: str
    name: str
    x25519_public_key: str
    ed25519_public_key: str
    created_at: str


class DeviceLinkRequestedEvent(TypedDict):
    """A pending device of the account opened a link request: the account's active devices'
    connections get a `link_request` frame (protocol.md 6.2, 4.7)."""

    type: Literal["device.link_requested"]
    device: LinkRequestedDevice
    expires_at: str


def _iso(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def device_link_requested_event(*, device: Device, expires_at: datetime) -> DeviceLinkRequestedEvent:
    return {
        "type": "device.link_requested",
        "device": {
            "device_id": str(device.id),
            "name": device.name,
            "x25519_public_key": base64.b64encode(bytes(device.x25519_public_key)).decode("ascii"),
            "ed25519_public_key": base64.b64encode(bytes(device.ed25519_public_key)).decode("ascii"),
            "created_at": _iso(device.created_at),
        },
        "expires_at": _iso(expires_at),
    }


class DeviceListChangedEvent(TypedDict):
    """An account's signed device list has a new version: connections of the account's devices
    and of everyone sharing a conversation with it get a `device_list` frame, so clients read
    the list again before trusting or wrapping for its devices."""

    type: Literal["device.list_changed"]
    username: str
    version: int


def device_list_changed_event(*, username: str, version: int) -> DeviceListChangedEvent:
    return {"type": "device.list_changed", "username": username, "version": version}
