"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

import uuid
from typing import Literal, TypedDict

from devices.models import DeviceToken


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
