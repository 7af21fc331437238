"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

from typing import Literal, TypedDict

from devices.models import DeviceToken


class TokenRevokedEvent(TypedDict):
    """A token stopped working (log-out): sockets authenticated with it close with 4401."""

    type: Literal["token.revoked"]
    token_id: int


def token_revoked_event(token: DeviceToken) -> TokenRevokedEvent:
    return {"type": "token.revoked", "token_id": token.pk}
