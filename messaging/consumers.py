"""The realtime gateway: one `RealtimeConsumer` per WebSocket connection (protocol.md 6).

The consumer authenticates, parses and relays. What to push, when to retry and when the device is
caught up is decided by the connection's `DeliveryEngine` (messaging/delivery.py, no I/O): the
consumer feeds it frames, channel-layer events and timers, and carries out the actions it
returns (send a frame, read a page of the log, arm a timer). Writes go through services (sends
through the process's `SendBatcher`, cursors through the `CursorWriter`), reads through
selectors, all via `database_sync_to_async`; every frame it sends is built in messaging/wire.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from common.asyncdb import db_call
from common.errors import ApiError
from common.metrics import CATCHUP_SIZE, CONNECTED_DEVICES, DELIVERY_LATENCY, WS_CONNECTIONS, WS_FRAMES
from common.protocol import PROTOCOL_VERSION
from common.ratelimit import LocalRateLimit, RateLimitedError
from common.realtime import conversation_group, device_group
from conversations.selectors import conversation_last_seqs
from devices.errors import DeviceNotActiveError
from devices.models import Device
from devices.presence import presence_connection
from devices.selectors import device_token_get_live_by_token
from messaging import delivery, frames, wire
from messaging.batching import SendGate
from messaging.errors import (
    CLOSE_INVALID_TOKEN,
    CLOSE_NOT_ACTIVE,
    FrameInvalidError,
    FrameTooLargeError,
    FrameTypeUnknownError,
    GatewayAuthTimeoutError,
    GatewayNotAuthenticatedError,
    GatewayTokenInvalidError,
    GatewayVersionUnsupportedError,
    SendsInFlightTooManyError,
)
from messaging.relays import EventRelays
from messaging.runtime import gateway_runtime
from messaging.selectors import message_frames_after, realtime_positions
from messaging.services import EnvelopeSendResult, SendRequest
from messaging.wire import error_frame

logger = logging.getLogger(__name__)

SUBPROTOCOL = "e2ee.v1"
TOKEN_SUBPROTOCOL_PREFIX = "e2ee.token."  # noqa: S105 (a prefix, not a credential)


def _authenticate(token: str) -> tuple[Device, int]:
    """The active device the token belongs to (user loaded) and the token's id."""
    live = device_token_get_live_by_token(token=token)
    if live is None or not live.device.user.is_active:
        raise GatewayTokenInvalidError()
    if live.device.status != Device.Status.ACTIVE:
        raise DeviceNotActiveError()
    return live.device, live.pk


_OUT_COUNTERS: dict[str, Any] = {}


def _frames_out(kind: str) -> Any:
    """The `out` frame counter of a frame type, looked up once (`labels()` is not free)."""
    counter = _OUT_COUNTERS.get(kind)
    if counter is None:
        counter = _OUT_COUNTERS[kind] = WS_FRAMES.labels(direction="out", type=kind)
    return counter


class RealtimeConsumer(EventRelays, AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    device: Device | None = None

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        """Every frame goes out here; counted by type (every frame this gateway writes starts
        with `{"type":"<type>"`, see `wire.frame_json`)."""
        if text_data is not None:
            end = text_data.find('"', 9)
            _frames_out(text_data[9:end] if text_data.startswith('{"type":"') and end > 0 else "other").inc()
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch minus its `aclose_old_connections()`: a thread hop per frame and per
        event, for connections this consumer never opens in the event-loop thread (all its
        database work goes through `db_call`)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle ------------------------------------------------------------------

    async def connect(self) -> None:
        self.device = None
        self.token_id = 0
        self.runtime = gateway_runtime()
        self.engine = delivery.DeliveryEngine(
            origin=self.channel_name,
            window=int(settings.E2EE_WS_WINDOW),
            retry_s=float(settings.E2EE_WS_RETRY_S),
            max_retries=int(settings.E2EE_WS_MAX_RETRIES),
            clock=time.monotonic,
            wall=time.time,
        )
        self.in_flight = 0
        self.send_gate = SendGate()  # sender order after a transient refusal (protocol.md 6.3)
        self.tasks: set[asyncio.Task[None]] = set()
        self.retry_handle: asyncio.TimerHandle | None = None
        self.gap_timers: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self.frame_limit = LocalRateLimit("ws_frame", clock=time.time)
        self.closing = False
        # Handlers run one at a time; the timers are the one thing that runs beside them.
        self.stream_lock = asyncio.Lock()
        offered: list[str] = list(self.scope.get("subprotocols") or [])
        token = next(
            (p[len(TOKEN_SUBPROTOCOL_PREFIX) :] for p in offered if p.startswith(TOKEN_SUBPROTOCOL_PREFIX)), None
        )
        await self.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if token is not None:
            await self._login(token)
        else:
            loop = asyncio.get_running_loop()
            self.auth_timer: asyncio.TimerHandle | None = loop.call_later(
                settings.E2EE_WS_AUTH_TIMEOUT_S, lambda: self._spawn(self._auth_timeout())
            )

    async def _auth_timeout(self) -> None:
        if self.device is None and not self.closing:
            await self._refuse(GatewayAuthTimeoutError())

    async def _refuse(self, error: ApiError, code: int | None = None) -> None:
        """Answer with an `error` frame, then close with the error's close code (or `code`)."""
        if self.closing:
            return
        self.closing = True
        if self.device is None:
            WS_CONNECTIONS.labels(outcome="refused").inc()
        await self.send(text_data=error_frame(error))
        await self.close(code=code if code is not None else getattr(error, "close_code", CLOSE_INVALID_TOKEN))

    async def _login(self, token: str) -> None:
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        try:
            device, token_id = await db_call(_authenticate)(token)
        except DeviceNotActiveError as error:
            await self._refuse(error, CLOSE_NOT_ACTIVE)
            return
        except ApiError as error:
            await self._refuse(error, CLOSE_INVALID_TOKEN)
            return
        positions = await db_call(realtime_positions)(device=device)
        self.device = device
        self.token_id = token_id
        self.username = device.user.username
        catch_up = self.engine.start(positions)
        # Subscribe before reading anything: an event that arrives meanwhile waits in our
        # channel and is handled after catch-up started, by the seq rules.
        await self.channel_layer.group_add(device_group(device.pk), self.channel_name)
        for conversation_id in self.engine.followed():
            await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
        self.runtime.sweeper.register(self)
        WS_CONNECTIONS.labels(outcome="accepted").inc()
        CONNECTED_DEVICES.inc()
        became_online = await self._presence_connect()
        await self.send(
            text_data=wire.welcome_frame(
                version=PROTOCOL_VERSION,
                device_id=device.pk,
                username=self.username,
                heartbeat_s=settings.E2EE_WS_HEARTBEAT_S,
            )
        )
        if became_online:
            await self._publish_presence(online=True)
        async with self.stream_lock:
            await self._apply(catch_up)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        if self.retry_handle is not None:
            self.retry_handle.cancel()
        for gap_timer in self.gap_timers.values():
            gap_timer.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.device is None:
            return
        WS_CONNECTIONS.labels(outcome="closed").inc()
        CONNECTED_DEVICES.dec()
        self.runtime.sweeper.unregister(self)
        try:
            await self.channel_layer.group_discard(device_group(self.device.pk), self.channel_name)
            for conversation_id in self.engine.followed():
                await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
        except Exception:  # noqa: BLE001 - the layer is down; its subscriptions die with it
            logger.warning("group discard failed on disconnect")
        try:
            went_offline = await self.runtime.presence.disconnect(
                self.device.user_id, presence_connection(self.device.pk, self.channel_name)
            )
            if went_offline:
                await self._publish_presence(online=False)
        except Exception:  # noqa: BLE001 - Redis down: the presence entry expires on its own
            logger.warning("presence disconnect failed")

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- carrying out the delivery engine's actions ----------------------------------------------

    async def _apply(self, actions: list[delivery.Action]) -> None:
        """Carry out the engine's actions in order (under `stream_lock`), then send `caught_up`
        if that is what they amounted to."""
        for action in actions:
            if self.closing:
                return
            await self._apply_one(action)
        for caught_up in self.engine.caught_up():
            assert isinstance(caught_up, delivery.CaughtUp)
            CATCHUP_SIZE.observe(caught_up.pushed)
            await self.send(text_data=wire.CAUGHT_UP_FRAME)

    async def _apply_one(self, action: delivery.Action) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(action, delivery.Push):
            await self.send(text_data=action.text)
        elif isinstance(action, delivery.Pump):
            await self._pump(action)
        elif isinstance(action, delivery.ArmRetry):
            self.retry_handle = loop.call_later(action.delay_s, self._timer_fired, self._retry)
        elif isinstance(action, delivery.ArmGapTimer):
            pk = action.conversation_id
            self.gap_timers[pk] = loop.call_later(action.delay_s, self._timer_fired, self._gap_expired, pk)
        elif isinstance(action, delivery.CancelGapTimer):
            gap_timer = self.gap_timers.pop(action.conversation_id, None)
            if gap_timer is not None:
                gap_timer.cancel()
        elif isinstance(action, delivery.RecordCursor):
            assert self.device is not None
            self.runtime.cursor_writer.record(
                device_id=self.device.pk,
                username=self.username,
                conversation_id=action.conversation_id,
                delivered_seq=action.delivered_seq,
                read_seq=action.read_seq,
            )
        elif isinstance(action, delivery.ObserveLatency):
            for seconds in action.seconds:
                DELIVERY_LATENCY.observe(seconds)
        elif isinstance(action, delivery.Close):
            await self._refuse(action.error)

    async def _pump(self, pump: delivery.Pump) -> None:
        """Read what the engine asks for, page by page, and push what it makes of the rows."""
        budget = pump.at_most
        for conversation_id in pump.conversation_ids:
            while not self.closing and (read := self.engine.next_read(conversation_id, budget)) is not None:
                rows = await db_call(message_frames_after)(
                    conversation_id=read.conversation_id, after=read.after, limit=read.limit
                )
                actions, pushed = self.engine.rows_read(read, rows)
                if budget is not None:
                    budget -= pushed
                for action in actions:  # pushes and a retry timer, never another pump
                    await self._apply_one(action)

    def _timer_fired(self, handler: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._spawn(handler(*args))

    async def _retry(self) -> None:
        async with self.stream_lock:
            if self.closing:
                return
            actions = self.engine.retry_due()
            await self._apply(actions)
            await self._apply(self.engine.pump_done())

    async def _gap_expired(self, conversation_id: uuid.UUID) -> None:
        async with self.stream_lock:
            self.gap_timers.pop(conversation_id, None)
            if not self.closing:
                await self._apply(self.engine.gap_expired(conversation_id))

    # --- frames from the client ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        max_bytes = int(settings.E2EE_WS_MAX_FRAME_BYTES)
        if frames.frame_too_large(text_data, bytes_data, max_bytes):
            # Under daphne autobahn refuses these as they arrive (config/daphne_protocol.py); this is
            # the same answer under any other server.
            await self._refuse(FrameTooLargeError(max_bytes))
            return
        if text_data is None:
            if not self._frame_limited(None):
                await self.send(
                    text_data=error_frame(FrameInvalidError({"frame": ["Binary frames are not accepted."]}))
                )
            return
        try:
            frame = frames.frame_parse(text_data)
        except (FrameInvalidError, FrameTypeUnknownError) as error:
            WS_FRAMES.labels(direction="in", type="invalid").inc()
            frame_id = error.frame_id if isinstance(error, FrameInvalidError) else None
            if self.device is None:  # a broken hello (or anything else) before authentication
                await self._refuse(error, CLOSE_INVALID_TOKEN)
            elif not self._frame_limited(frame_id):
                await self.send(text_data=error_frame(error, frame_id))
            return
        # Acknowledgements never count against the frame limit: one that moves nothing costs a
        # lookup, one that moves is bounded by the messages pushed, and refusing them would stop
        # delivery for the rest of the window (issue 13 F1).
        if not isinstance(frame, frames.Cursor) and self._frame_limited(
            getattr(frame, "id", None), frame.content.client_message_id if isinstance(frame, frames.Send) else None
        ):
            return
        WS_FRAMES.labels(direction="in", type=frame.kind).inc()
        if isinstance(frame, frames.Hello):
            if self.device is None:
                if frame.v != PROTOCOL_VERSION:
                    await self._refuse(GatewayVersionUnsupportedError([PROTOCOL_VERSION]))
                    return
                await self._login(frame.token)
            return
        if self.device is None:
            await self._refuse(GatewayNotAuthenticatedError())
            return
        try:
            await self._handle(frame)
        except ApiError as error:
            await self.send(text_data=error_frame(error, getattr(frame, "id", None)))

    async def _handle(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.Send):
            self._send_message(frame)
        elif isinstance(frame, frames.Cursor):
            async with self.stream_lock:
                await self._cursor(frame)
        elif isinstance(frame, frames.Fetch):
            await self._fetch(frame)
        elif isinstance(frame, frames.Typing):
            await self._typing(frame)
        elif isinstance(frame, frames.PresenceQuery):
            await self._presence_query(frame)
        elif isinstance(frame, frames.Ping):
            await self.send(text_data=wire.pong_frame(frame.id))

    def _frame_limited(self, frame_id: str | None, send_id: bytes | None = None) -> bool:
        """The per-connection frame limit (`ws_frame`), counted in this process (no Redis round
        trip). Every frame over it is dropped and answered with `rate_limited` (with its `id`),
        so a client always learns which of its frames were not handled. A refused send
        (`send_id`: its client_message_id) closes the send gate behind it."""
        try:
            self.frame_limit.hit()
        except RateLimitedError as error:
            if send_id is not None:
                self.send_gate.refused(self.send_gate.admit(send_id)[0], send_id, error)
            self._spawn(self.send(text_data=error_frame(error, frame_id)))
            return True
        return False

    def _send_message(self, frame: frames.Send) -> None:
        assert self.device is not None
        if self.in_flight >= settings.E2EE_WS_MAX_IN_FLIGHT:
            error = SendsInFlightTooManyError(settings.E2EE_WS_MAX_IN_FLIGHT)
            cmid = frame.content.client_message_id
            self.send_gate.refused(self.send_gate.admit(cmid)[0], cmid, error)
            raise error
        # Submitted synchronously, before any await: frames are sequenced in arrival order (and
        # after a transient refusal, the gate refuses what follows until it is sent again).
        future = self.runtime.send_batcher.submit(
            SendRequest(self.device, frame.sender_device_id, frame.content, origin=self.channel_name),
            self.send_gate,
        )
        self.in_flight += 1
        self._spawn(self._answer_send(frame, future))

    async def _answer_send(self, frame: frames.Send, future: asyncio.Future[EnvelopeSendResult | ApiError]) -> None:
        try:
            result = await future
        finally:
            self.in_flight -= 1
        if isinstance(result, ApiError):
            await self.send(text_data=error_frame(result, frame.id))
            return
        self.engine.sent_answered(result.message.conversation_id, result.message.seq)
        await self.send(
            text_data=wire.sent_frame(
                frame_id=frame.id,
                message=result.message,
                client_message_id_b64=frame.content_client_message_id_b64,
                created=result.created,
            )
        )

    async def _cursor(self, frame: frames.Cursor) -> None:
        if self.engine.needs_last_seq(frame.conversation_id, frame.seq):
            # Newer messages may have committed without this connection hearing yet: ask the
            # database before refusing (rare: a client acknowledges what it was pushed).
            last_seqs = await db_call(conversation_last_seqs)(conversation_ids=[frame.conversation_id])
            self.engine.learn_last_seq(frame.conversation_id, last_seqs.get(frame.conversation_id, 0))
        if frame.kind == "read":
            await self._apply(self.engine.read(frame.conversation_id, frame.seq))
        else:
            await self._apply(self.engine.acked(frame.conversation_id, frame.seq))

    async def _fetch(self, frame: frames.Fetch) -> None:
        self.engine.stream(frame.conversation_id)
        rows = await db_call(message_frames_after)(
            conversation_id=frame.conversation_id, after=frame.after, limit=frame.limit + 1
        )
        shown = rows[: frame.limit]
        for _, text in shown:
            await self.send(text_data=text)
        await self.send(
            text_data=wire.fetched_frame(
                frame_id=frame.id,
                conversation_id=frame.conversation_id,
                next_after=shown[-1][0] if shown else frame.after,
                has_more=len(rows) > frame.limit,
            )
        )

    # --- the sweeper (messaging/sweeper.py) -----------------------------------------------------

    def followed_conversations(self) -> list[uuid.UUID]:
        return [] if self.closing else self.engine.followed()

    async def catch_up_to(self, last_seqs: dict[uuid.UUID, int]) -> None:
        """Pushes that never came: the database knows newer messages than this connection."""
        async with self.stream_lock:
            if not self.closing:
                await self._apply(self.engine.swept(last_seqs))

    # --- events from the channel layer -------------------------------------------------------

    async def conversation_messages(self, event: dict[str, Any]) -> None:
        async with self.stream_lock:
            if not self.closing:
                actions = self.engine.live(
                    uuid.UUID(event["conversation_id"]), event["messages"], float(event.get("stored_at", 0.0))
                )
                await self._apply(actions)

    # The names before `conv.*` events became `conversation.*`: a process of the previous release
    # still publishes them during a rolling upgrade. Remove in the release after.
    conv_messages = conversation_messages
    conv_receipts = EventRelays.conversation_receipts
    conv_typing = EventRelays.conversation_typing

    async def conversation_joined(self, event: dict[str, Any]) -> None:
        async with self.stream_lock:
            conversation = event["conversation"]
            conversation_id = uuid.UUID(conversation["conversation_id"])
            if self.closing or conversation_id in self.engine.streams:
                return
            catch_up = self.engine.joined(conversation_id, int(conversation["last_seq"]))
            await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
            await self.send(text_data=wire.conversation_frame(conversation))
            await self._apply(catch_up)

    async def conversation_members(self, event: dict[str, Any]) -> None:
        """A member was added, removed or left: tell the client; a device whose account left stops
        receiving the conversation (the newcomer's devices subscribe on `conversation.joined`)."""
        async with self.stream_lock:
            if self.closing:
                return
            conversation_id = uuid.UUID(event["conversation_id"])
            if event["change"] in ("removed", "left") and event["username"] == self.username:
                await self._apply(self.engine.left(conversation_id))
                await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
            await self.send(
                text_data=wire.conversation_members_frame(
                    conversation_id=event["conversation_id"],
                    change=event["change"],
                    username=event["username"],
                    by=event["by"],
                    members=event["members"],
                    current_epoch=event["current_epoch"],
                )
            )
