"""What the gateway relays without delivery state: channel-layer events, presence and typing.

A mixin of `RealtimeConsumer` (messaging/consumers.py). The event handlers render an event with
messaging/wire.py and send it, or close the connection when its device or token stopped being
valid (protocol.md 6.1); Channels dispatches an event's `type` (dots become underscores) to the
method of that name. Presence and typing (protocol.md 6.6) go between clients through Redis and
the channel layer. Messages, acknowledgements and catch-up are messaging/delivery.py's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from common.asyncdb import db_call
from common.errors import ApiError
from common.realtime import conversation_group
from devices.models import Device
from devices.presence import TYPING_TTL_S, presence_connection
from messaging import frames, wire
from messaging.delivery import DeliveryEngine
from messaging.errors import GatewayTokenInvalidError
from messaging.selectors import users_sharing_a_conversation

if TYPE_CHECKING:
    from messaging.runtime import GatewayRuntime

logger = logging.getLogger(__name__)


class EventRelays:
    closing: bool
    device: Device | None
    username: str
    token_id: int

    engine: DeliveryEngine
    runtime: GatewayRuntime
    channel_layer: Any
    channel_name: str

    if TYPE_CHECKING:  # provided by the consumer

        async def send(
            self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
        ) -> None: ...

        async def _refuse(self, error: ApiError, code: int | None = None) -> None: ...

    async def conversation_receipts(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.send(text_data=event["frame"])

    async def conversation_typing(self, event: dict[str, Any]) -> None:
        if self.closing or event["username"] == self.username:
            return
        await self.send(
            text_data=wire.typing_frame(
                conversation_id=event["conversation_id"],
                username=event["username"],
                device_id=event["device_id"],
                state=event["state"],
                expires_in_ms=int(TYPING_TTL_S * 1000),
            )
        )

    async def presence_changed(self, event: dict[str, Any]) -> None:
        # Sent to every conversation of the user, own devices included: those skip their own.
        if not self.closing and event["username"] != self.username:
            await self.send(text_data=wire.presence_frame({event["username"]: event["online"]}))

    async def token_revoked(self, event: dict[str, Any]) -> None:
        if event.get("token_id") == self.token_id:
            await self._refuse(GatewayTokenInvalidError())

    async def device_signed_out(self, event: dict[str, Any]) -> None:
        """Every token of the device was revoked (its account was deactivated)."""
        await self._refuse(GatewayTokenInvalidError("Signed out: " + str(event.get("reason", ""))))

    async def device_revoked(self, event: dict[str, Any]) -> None:
        await self._refuse(GatewayTokenInvalidError("This device was revoked."))

    async def device_link_requested(self, event: dict[str, Any]) -> None:
        """A pending device of this account asks to join it (protocol.md 4.7): tell the client."""
        if not self.closing and self.device is not None:
            await self.send(text_data=wire.link_request_frame(device=event["device"], expires_at=event["expires_at"]))

    async def device_list_changed(self, event: dict[str, Any]) -> None:
        """An account this device cares about has a new signed device list version."""
        if not self.closing and self.device is not None:
            await self.send(text_data=wire.device_list_frame(username=event["username"], version=event["version"]))

    async def key_request_filed(self, event: dict[str, Any]) -> None:
        """Another member device lacks an epoch's ChatKey (protocol.md 4.8): the client decides
        whether to re-wrap it."""
        if not self.closing and self.device is not None:
            await self.send(text_data=wire.key_request_frame(event["key_request"]))

    async def key_request_served(self, event: dict[str, Any]) -> None:
        """A key this device asked for was re-wrapped for it: fetch it (`GET .../keys`)."""
        if not self.closing and self.device is not None:
            await self.send(
                text_data=wire.key_available_frame(
                    request_id=event["request_id"], conversation_id=event["conversation_id"], epoch=event["epoch"]
                )
            )

    # --- presence and typing (protocol.md 6.6) ---------------------------------------------------

    async def _typing(self, frame: frames.Typing) -> None:
        assert self.device is not None
        if not self.engine.typing_relayed(frame.conversation_id, started=frame.started):
            return
        await self.runtime.presence.store.typing(str(frame.conversation_id), str(self.device.pk), frame.started)
        await self.channel_layer.group_send(
            conversation_group(frame.conversation_id),
            {
                "type": "conversation.typing",
                "conversation_id": str(frame.conversation_id),
                "username": self.username,
                "device_id": str(self.device.pk),
                "state": "start" if frame.started else "stop",
            },
        )

    async def _presence_query(self, frame: frames.PresenceQuery) -> None:
        assert self.device is not None
        visible = await db_call(users_sharing_a_conversation)(user=self.device.user, usernames=frame.usernames)
        online = await self.runtime.presence.store.online(visible.values())
        users = {name: visible.get(name) in online for name in frame.usernames}
        await self.send(text_data=wire.presence_frame(users, frame.id))

    async def _presence_connect(self) -> bool:
        assert self.device is not None
        try:
            return await self.runtime.presence.connect(
                self.device.user_id, presence_connection(self.device.pk, self.channel_name)
            )
        except Exception:  # noqa: BLE001 - Redis down: presence is best effort, messaging is not
            logger.warning("presence connect failed")
            return False

    async def _publish_presence(self, *, online: bool) -> None:
        event = {"type": "presence.changed", "username": self.username, "online": online}
        try:
            for conversation_id in self.engine.followed():
                await self.channel_layer.group_send(conversation_group(conversation_id), event)
        except Exception:  # noqa: BLE001 - presence is best effort
            logger.warning("presence publish failed")
