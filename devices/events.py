"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

import uuid
from typing import Literal, TypedDict


class DeviceRevokedEvent(TypedDict):
    """The device was revoked (by a device of its account or by an operator): every connection
    of it must be closed (protocol.md 6.1: `invalid_token`, close 4401). Channels dispatches
    `type` "device.revoked" to a consumer's `device_revoked` handler."""

    type: Literal["device.revoked"]
    device_id: str


def device_revoked_event(*, device_id: uuid.UUID) -> DeviceRevokedEvent:
    return {"type": "device.revoked", "device_id": str(device_id)}
