"""The realtime gateway: one `RealtimeConsumer` per WebSocket connection (protocol.md 6).

The consumer is a relay with bookkeeping. Writes go through services (sends through the
process's `SendBatcher`, cursors through the `CursorWriter`), reads through selectors, all via
`database_sync_to_async`. The database is the source of truth and the channel layer a doorbell:
per conversation the connection tracks the next seq to push and the last acknowledged one, so a
live event that is missing, late or out of order is repaired from the database, and a device
never gets a newer message before an older one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from common.asyncdb import db_call
from common.errors import ApiError
from common.metrics import (
    CATCHUP_SIZE,
    CONNECTED_DEVICES,
    DELIVERY_LATENCY,
    WS_CONNECTIONS,
    WS_FRAMES,
)
from common.ratelimit import LocalRateLimit, RateLimitedError
from common.realtime import conversation_group, device_group
from conversations.errors import ConversationNotFoundError
from conversations.selectors import conversation_last_seqs
from devices.errors import DeviceNotActiveError
from devices.models import Device
from devices.presence import TYPING_TTL_S, presence_connection, presence_registry
from devices.selectors import device_token_get_live_by_token
from messaging import frames
from messaging.batching import send_batcher
from messaging.cursors import cursor_writer
from messaging.errors import (
    CLOSE_INVALID_TOKEN,
    CLOSE_NOT_ACTIVE,
    AckTimeoutError,
    CursorBeyondLastSeqError,
    FrameInvalidError,
    FrameTooLargeError,
    FrameTypeUnknownError,
    GatewayAuthTimeoutError,
    GatewayNotAuthenticatedError,
    GatewayTokenInvalidError,
    GatewayVersionUnsupportedError,
    SendsInFlightTooManyError,
)
from messaging.selectors import (
    ConversationPosition,
    message_frames_after,
    realtime_positions,
    users_sharing_a_conversation,
)
from messaging.services import PROTOCOL_VERSION, EnvelopeSendResult, SendRequest
from messaging.sweeper import sweeper
from messaging.wire import error_frame, frame_json, iso_timestamp

logger = logging.getLogger(__name__)

SUBPROTOCOL = "e2ee.v1"
TOKEN_SUBPROTOCOL_PREFIX = "e2ee.token."  # noqa: S105 (a prefix, not a credential)
CLOSE_SERVER_ERROR = 1011
_PUMP_PAGE = 200
_RETRY_MAX_S = 60.0
# Messages pushed again per retry (from the oldest unacknowledged ones).
_RETRY_BATCH = 16
# How long a push that arrived ahead of a missing seq waits for it before the gap is read from
# the database (pushes of one conversation committed by two processes can cross in Redis).
_GAP_WAIT_S = 0.1
# Live pushes per conversation remembered for the delivery-latency metric until acknowledged.
_LATENCY_SAMPLES = 64


class _Stream:
    """One conversation on one connection: everything below `next_seq` has been pushed (or was
    acknowledged before), everything up to `acked` is acknowledged, `last_known` is the newest
    seq known to exist."""

    __slots__ = ("acked", "answered", "gap_timer", "held", "last_known", "next_seq", "read", "stored_at", "typing_at")

    def __init__(self, position: ConversationPosition) -> None:
        self.acked = position.delivered_seq
        self.read = position.read_seq
        self.next_seq = position.delivered_seq + 1
        self.last_known = position.last_seq
        self.typing_at = 0.0
        # (seq, Unix time stored) of live pushes awaiting their ack, for the delivery-latency
        # metric; created on first use and bounded, so idle connections carry nothing.
        self.stored_at: deque[tuple[int, float]] | None = None
        # Pushes that arrived ahead of a missing seq (another process published it a moment
        # later), held briefly instead of reading the gap from the database at once.
        self.held: dict[int, tuple[str, str]] | None = None
        self.gap_timer: asyncio.TimerHandle | None = None
        # Seqs of this connection's own sends already answered with `sent` and not yet
        # acknowledged: read back from the database (a full window, a gap, a retry) they are
        # counted as pushed but not sent again; the client has them. Created on first use.
        self.answered: set[int] | None = None


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


class RealtimeConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    device: Device | None = None

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        """Every frame goes out here; counted by type (every frame this gateway writes starts
        with `{"type":"<type>"`, see `frame_json`)."""
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
        self.streams: dict[uuid.UUID, _Stream] = {}
        self.unacked = 0
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.retry_handle: asyncio.TimerHandle | None = None
        self.retry_interval = float(settings.E2EE_WS_RETRY_S)
        self.retries_without_progress = 0
        self.last_progress = time.monotonic()
        self.catch_up_pending: set[uuid.UUID] = set()
        self.caught_up_sent = False
        self.catch_up_pushed = 0
        self.frame_limit = LocalRateLimit("ws_frame", clock=time.time)
        self.closing = False
        # Handlers run one at a time; the retry timer is the one thing that runs beside them.
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
        """Answer with an `error` frame, then close with the error's code (or `code`)."""
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
        # Subscribe before reading anything: an event that arrives meanwhile waits in our
        # channel and is handled after catch-up started, by the seq rules.
        await self.channel_layer.group_add(device_group(device.pk), self.channel_name)
        for position in positions:
            self.streams[position.conversation_id] = _Stream(position)
            await self.channel_layer.group_add(conversation_group(position.conversation_id), self.channel_name)
        sweeper().register(self)
        WS_CONNECTIONS.labels(outcome="accepted").inc()
        CONNECTED_DEVICES.inc()
        became_online = await self._presence_connect()
        await self.send(
            text_data=frame_json(
                {
                    "type": "welcome",
                    "v": 1,
                    "device_id": str(device.pk),
                    "username": self.username,
                    "heartbeat_s": settings.E2EE_WS_HEARTBEAT_S,
                }
            )
        )
        if became_online:
            await self._publish_presence(online=True)
        async with self.stream_lock:
            self.catch_up_pending = {pk for pk, s in self.streams.items() if s.next_seq <= s.last_known}
            for conversation_id in list(self.catch_up_pending):
                await self._pump(conversation_id)
            await self._maybe_caught_up()

    async def disconnect(self, code: int) -> None:
        self.closing = True
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        if self.retry_handle is not None:
            self.retry_handle.cancel()
        for stream in self.streams.values():
            if stream.gap_timer is not None:
                stream.gap_timer.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.device is None:
            return
        WS_CONNECTIONS.labels(outcome="closed").inc()
        CONNECTED_DEVICES.dec()
        sweeper().unregister(self)
        try:
            await self.channel_layer.group_discard(device_group(self.device.pk), self.channel_name)
            for conversation_id in self.streams:
                await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
        except Exception:  # noqa: BLE001 - the layer is down; its subscriptions die with it
            logger.warning("group discard failed on disconnect")
        try:
            went_offline = await presence_registry().disconnect(
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

    # --- frames from the client ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        max_bytes = int(settings.E2EE_WS_MAX_FRAME_BYTES)
        if frames.frame_too_large(text_data, bytes_data, max_bytes):
            # Under daphne autobahn refuses these as they arrive (config/daphne.py); this is
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
        if not isinstance(frame, frames.Cursor) and self._frame_limited(getattr(frame, "id", None)):
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
            await self.send(text_data=frame_json({"type": "pong", "id": frame.id}))

    def _frame_limited(self, frame_id: str | None) -> bool:
        """The per-connection frame limit (`ws_frame`), counted in this process (no Redis round
        trip). Every frame over it is dropped and answered with `rate_limited` (with its `id`),
        so a client always learns which of its frames were not handled."""
        try:
            self.frame_limit.hit()
        except RateLimitedError as error:
            self._spawn(self.send(text_data=error_frame(error, frame_id)))
            return True
        return False

    def _stream(self, conversation_id: uuid.UUID) -> _Stream:
        stream = self.streams.get(conversation_id)
        if stream is None:
            raise ConversationNotFoundError()
        return stream

    def _send_message(self, frame: frames.Send) -> None:
        assert self.device is not None
        if self.in_flight >= settings.E2EE_WS_MAX_IN_FLIGHT:
            raise SendsInFlightTooManyError(settings.E2EE_WS_MAX_IN_FLIGHT)
        # Submitted synchronously, before any await: frames are sequenced in arrival order.
        future = send_batcher().submit(
            SendRequest(self.device, frame.sender_device_id, frame.content, origin=self.channel_name)
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
        message = result.message
        stream = self.streams.get(message.conversation_id)
        if stream is not None and message.seq > stream.acked:
            if stream.answered is None:
                stream.answered = set()
            stream.answered.add(message.seq)
        await self.send(
            text_data=frame_json(
                {
                    "type": "sent",
                    "id": frame.id,
                    "conversation_id": str(message.conversation_id),
                    "seq": message.seq,
                    "client_message_id": frame.content_client_message_id_b64,
                    "created": result.created,
                    "created_at": iso_timestamp(message.created_at),
                }
            )
        )

    async def _cursor(self, frame: frames.Cursor) -> None:
        assert self.device is not None
        stream = self._stream(frame.conversation_id)
        if frame.seq > stream.last_known:
            # Newer messages may have committed without this connection hearing yet: ask the
            # database before refusing (rare: a client acknowledges what it was pushed).
            last_seqs = await db_call(conversation_last_seqs)(conversation_ids=[frame.conversation_id])
            stream.last_known = max(stream.last_known, last_seqs.get(frame.conversation_id, 0))
            if frame.seq > stream.last_known:
                raise CursorBeyondLastSeqError(frame.conversation_id, stream.last_known)
        writer = cursor_writer()
        if frame.kind == "read":
            if frame.seq > stream.read:
                stream.read = frame.seq
                writer.record(
                    device_id=self.device.pk,
                    username=self.username,
                    conversation_id=frame.conversation_id,
                    read_seq=frame.seq,
                )
            return
        if frame.seq <= stream.acked:
            return
        if stream.stored_at:
            now = time.time()
            while stream.stored_at and stream.stored_at[0][0] <= frame.seq:
                DELIVERY_LATENCY.observe(max(0.0, now - stream.stored_at.popleft()[1]))
        pushed_unacked_before = stream.next_seq - 1 - stream.acked
        stream.acked = frame.seq
        if stream.answered:
            stream.answered = {seq for seq in stream.answered if seq > frame.seq} or None
        stream.next_seq = max(stream.next_seq, frame.seq + 1)
        self.unacked -= pushed_unacked_before - (stream.next_seq - 1 - stream.acked)
        self.last_progress = time.monotonic()
        self.retry_interval = float(settings.E2EE_WS_RETRY_S)
        self.retries_without_progress = 0
        writer.record(
            device_id=self.device.pk,
            username=self.username,
            conversation_id=frame.conversation_id,
            delivered_seq=frame.seq,
        )
        # The window opened: push what waits in the database, oldest conversation state first.
        for conversation_id, behind in list(self.streams.items()):
            if behind.next_seq <= behind.last_known and self._room() > 0:
                await self._pump(conversation_id)
        await self._maybe_caught_up()

    async def _fetch(self, frame: frames.Fetch) -> None:
        self._stream(frame.conversation_id)
        rows = await db_call(message_frames_after)(
            conversation_id=frame.conversation_id, after=frame.after, limit=frame.limit + 1
        )
        for _, text in rows[: frame.limit]:
            await self.send(text_data=text)
        shown = rows[: frame.limit]
        await self.send(
            text_data=frame_json(
                {
                    "type": "fetched",
                    "id": frame.id,
                    "conversation_id": str(frame.conversation_id),
                    "next_after": shown[-1][0] if shown else frame.after,
                    "has_more": len(rows) > frame.limit,
                }
            )
        )

    async def _typing(self, frame: frames.Typing) -> None:
        assert self.device is not None
        stream = self._stream(frame.conversation_id)
        now = time.monotonic()
        if frame.started and now - stream.typing_at < 1.0:
            return  # at most one start per second and conversation
        stream.typing_at = now if frame.started else 0.0
        state = "start" if frame.started else "stop"
        await presence_registry().store.typing(str(frame.conversation_id), str(self.device.pk), frame.started)
        await self.channel_layer.group_send(
            conversation_group(frame.conversation_id),
            {
                "type": "conv.typing",
                "conversation_id": str(frame.conversation_id),
                "username": self.username,
                "device_id": str(self.device.pk),
                "state": state,
            },
        )

    async def _presence_query(self, frame: frames.PresenceQuery) -> None:
        assert self.device is not None
        visible = await db_call(users_sharing_a_conversation)(user=self.device.user, usernames=frame.usernames)
        online = await presence_registry().store.online(visible.values())
        users = {name: {"online": visible.get(name) in online} for name in frame.usernames}
        await self.send(text_data=frame_json({"type": "presence", "id": frame.id, "users": users}))

    # --- pushing ---------------------------------------------------------------------------------

    def _room(self) -> int:
        return int(settings.E2EE_WS_WINDOW) - self.unacked

    async def _pump(self, conversation_id: uuid.UUID, *, at_most: int | None = None) -> int:
        """Push this conversation's messages from the database, from `next_seq` up, while the
        window has room (and at most `at_most` of them); how many were pushed."""
        stream = self.streams[conversation_id]
        pushed = 0
        while stream.next_seq <= stream.last_known and self._room() > 0 and not self.closing:
            limit = min(self._room(), _PUMP_PAGE)
            if at_most is not None:
                if pushed >= at_most:
                    break
                limit = min(limit, at_most - pushed)
            rows = await db_call(message_frames_after)(
                conversation_id=conversation_id, after=stream.next_seq - 1, limit=limit
            )
            for seq, text in rows:
                if seq != stream.next_seq:  # a row this connection already pushed meanwhile
                    continue
                if not (stream.answered and seq in stream.answered):
                    await self.send(text_data=text)
                stream.next_seq = seq + 1
                self._pushed()
                pushed += 1
                if not self.caught_up_sent:
                    self.catch_up_pushed += 1
            if len(rows) < limit:  # the database has nothing newer (events bring what commits later)
                stream.last_known = stream.next_seq - 1
                break
        return pushed

    def _pushed(self) -> None:
        self.unacked += 1
        if self.retry_handle is None:
            self.last_progress = time.monotonic()
            self._arm_retry()

    def _arm_retry(self) -> None:
        loop = asyncio.get_running_loop()
        self.retry_handle = loop.call_later(self.retry_interval, lambda: self._spawn(self._retry()))

    async def _retry(self) -> None:
        """Nothing acknowledged for a while: push again from each oldest unacknowledged seq."""
        async with self.stream_lock:
            await self._retry_locked()

    async def _retry_locked(self) -> None:
        self.retry_handle = None
        if self.closing or self.unacked <= 0:
            return
        if time.monotonic() - self.last_progress < self.retry_interval:
            self._arm_retry()
            return
        if self.retries_without_progress >= settings.E2EE_WS_MAX_RETRIES:
            # A client that reads nothing would have every retry pile up in the socket's write
            # buffer: close instead. It resumes from its cursor when it reconnects.
            await self._refuse(AckTimeoutError())
            return
        self.retries_without_progress += 1
        self.retry_interval = min(self.retry_interval * 2, _RETRY_MAX_S)
        self.last_progress = time.monotonic()
        for stream in self.streams.values():
            if stream.next_seq - 1 > stream.acked:
                self.unacked -= stream.next_seq - 1 - stream.acked
                stream.next_seq = stream.acked + 1
        # Push again only the oldest few: a client that lost messages acknowledges them and the
        # window refills as usual; a client that reads nothing gets little more in its buffer.
        budget = _RETRY_BATCH
        for conversation_id, stream in list(self.streams.items()):
            if stream.next_seq <= stream.last_known and budget > 0:
                budget -= await self._pump(conversation_id, at_most=budget)
        if self.unacked > 0 and self.retry_handle is None:
            self._arm_retry()

    async def _maybe_caught_up(self) -> None:
        """Send `caught_up` once, when no conversation that was behind at login still is."""
        if self.caught_up_sent:
            return
        self.catch_up_pending = {
            pk for pk in self.catch_up_pending if self.streams[pk].next_seq <= self.streams[pk].last_known
        }
        if not self.catch_up_pending:
            self.caught_up_sent = True
            CATCHUP_SIZE.observe(self.catch_up_pushed)
            await self.send(text_data='{"type":"caught_up"}')

    # --- the sweeper (messaging/sweeper.py) -----------------------------------------------------

    def followed_conversations(self) -> list[uuid.UUID]:
        return [] if self.closing else list(self.streams)

    async def catch_up_to(self, last_seqs: dict[uuid.UUID, int]) -> None:
        """Pushes that never came: the database knows newer messages than this connection."""
        async with self.stream_lock:
            for conversation_id, stream in list(self.streams.items()):
                newest = last_seqs.get(conversation_id, 0)
                if newest > stream.last_known:
                    stream.last_known = newest
                    await self._pump(conversation_id)
            await self._maybe_caught_up()

    # --- events from the channel layer -------------------------------------------------------

    async def conv_messages(self, event: dict[str, Any]) -> None:
        async with self.stream_lock:
            await self._live_messages(event)

    async def _live_messages(self, event: dict[str, Any]) -> None:
        conversation_id = uuid.UUID(event["conversation_id"])
        stream = self.streams.get(conversation_id)
        if stream is None or self.closing:
            return
        stream.last_known = max(stream.last_known, max(row[0] for row in event["messages"]))
        stored_at = float(event.get("stored_at", 0.0))
        for seq, origin, text in event["messages"]:
            if seq < stream.next_seq:
                continue  # pushed already (catch-up, a gap repair, or a duplicate event)
            if self._room() <= 0:
                break  # a full window: acknowledgements will pump these from the database
            if seq > stream.next_seq:
                # Ahead of a missing seq: usually its event is a moment behind (another process
                # committed it), so hold this one briefly before reading the gap from the database.
                if stream.held is None:
                    stream.held = {}
                stream.held[seq] = (origin, text)
                if stream.gap_timer is None:
                    stream.gap_timer = asyncio.get_running_loop().call_later(
                        _GAP_WAIT_S, self._gap_timer_fired, conversation_id
                    )
                continue
            await self._push_live(stream, seq, origin, text, stored_at)
            while stream.held and stream.next_seq in stream.held and self._room() > 0:
                held_origin, held_text = stream.held.pop(stream.next_seq)
                await self._push_live(stream, stream.next_seq, held_origin, held_text, stored_at)
        self._forget_held(stream)
        await self._maybe_caught_up()

    async def _push_live(self, stream: _Stream, seq: int, origin: str, text: str, stored_at: float) -> None:
        stream.next_seq = seq + 1
        if origin == self.channel_name:
            # Our own send: the client has it from the `sent` frame. It still counts as
            # unacknowledged, so a lost `sent` is repaired by the retry.
            self._pushed()
            return
        await self.send(text_data=text)
        self._pushed()
        if stream.stored_at is None:
            stream.stored_at = deque(maxlen=_LATENCY_SAMPLES)
        stream.stored_at.append((seq, stored_at))

    @staticmethod
    def _forget_held(stream: _Stream) -> None:
        """Drop held pushes that are no longer ahead (pushed meanwhile), and the timer with them."""
        if stream.held:
            for seq in [seq for seq in stream.held if seq < stream.next_seq]:
                del stream.held[seq]
        if not stream.held and stream.gap_timer is not None:
            stream.gap_timer.cancel()
            stream.gap_timer = None

    def _gap_timer_fired(self, conversation_id: uuid.UUID) -> None:
        self._spawn(self._gap_expired(conversation_id))

    async def _gap_expired(self, conversation_id: uuid.UUID) -> None:
        """The missing push did not come: the database has it (and everything held after it)."""
        async with self.stream_lock:
            stream = self.streams.get(conversation_id)
            if stream is None or self.closing:
                return
            stream.gap_timer = None
            if stream.held:
                stream.held = None
                await self._pump(conversation_id)
            await self._maybe_caught_up()

    async def conv_receipts(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.send(text_data=event["frame"])

    async def conv_typing(self, event: dict[str, Any]) -> None:
        if self.closing or event["username"] == self.username:
            return
        frame = {key: event[key] for key in ("conversation_id", "username", "device_id", "state")}
        await self.send(text_data=frame_json({"type": "typing", **frame, "expires_in_ms": int(TYPING_TTL_S * 1000)}))

    async def presence_changed(self, event: dict[str, Any]) -> None:
        # Sent to every conversation of the user, own devices included: those skip their own.
        if not self.closing and event["username"] != self.username:
            await self.send(
                text_data=frame_json({"type": "presence", "users": {event["username"]: {"online": event["online"]}}})
            )

    async def conversation_joined(self, event: dict[str, Any]) -> None:
        async with self.stream_lock:
            await self._joined(event)

    async def _joined(self, event: dict[str, Any]) -> None:
        conversation = event["conversation"]
        conversation_id = uuid.UUID(conversation["conversation_id"])
        if self.closing or conversation_id in self.streams:
            return
        self.streams[conversation_id] = _Stream(
            ConversationPosition(conversation_id, int(conversation["last_seq"]), 0, 0)
        )
        await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
        await self.send(text_data=frame_json({"type": "conversation", "conversation": conversation}))
        # Messages may have been sent before we subscribed: look in the database.
        self.streams[conversation_id].last_known = 2**63 - 1
        await self._pump(conversation_id)

    async def conversation_members(self, event: dict[str, Any]) -> None:
        """A member was added, removed or left: tell the client; a device whose account left stops
        receiving the conversation (the newcomer's devices subscribe on `conversation.joined`)."""
        async with self.stream_lock:
            if self.closing:
                return
            conversation_id = uuid.UUID(event["conversation_id"])
            if event["change"] in ("removed", "left") and event["username"] == self.username:
                self.streams.pop(conversation_id, None)
                self.catch_up_pending.discard(conversation_id)
                await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
            frame = {key: event[key] for key in ("conversation_id", "change", "username", "by", "members")}
            await self.send(
                text_data=frame_json({"type": "conversation_members", **frame, "current_epoch": event["current_epoch"]})
            )

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
            frame = {"type": "link_request", "device": event["device"], "expires_at": event["expires_at"]}
            await self.send(text_data=frame_json(frame))

    async def device_list_changed(self, event: dict[str, Any]) -> None:
        """An account this device cares about has a new signed device list version."""
        if not self.closing and self.device is not None:
            frame = {"type": "device_list", "username": event["username"], "version": event["version"]}
            await self.send(text_data=frame_json(frame))

    async def key_request_filed(self, event: dict[str, Any]) -> None:
        """Another member device lacks an epoch's ChatKey (protocol.md 4.8): the client decides
        whether to re-wrap it."""
        if not self.closing and self.device is not None:
            await self.send(text_data=frame_json({"type": "key_request", "key_request": event["key_request"]}))

    async def key_request_served(self, event: dict[str, Any]) -> None:
        """A key this device asked for was re-wrapped for it: fetch it (`GET .../keys`)."""
        if not self.closing and self.device is not None:
            frame = {key: event[key] for key in ("request_id", "conversation_id", "epoch")}
            await self.send(text_data=frame_json({"type": "key_available", **frame}))

    # --- presence --------------------------------------------------------------------------------

    async def _presence_connect(self) -> bool:
        assert self.device is not None
        try:
            return await presence_registry().connect(
                self.device.user_id, presence_connection(self.device.pk, self.channel_name)
            )
        except Exception:  # noqa: BLE001 - Redis down: presence is best effort, messaging is not
            logger.warning("presence connect failed")
            return False

    async def _publish_presence(self, *, online: bool) -> None:
        event = {"type": "presence.changed", "username": self.username, "online": online}
        try:
            for conversation_id in self.streams:
                await self.channel_layer.group_send(conversation_group(conversation_id), event)
        except Exception:  # noqa: BLE001 - presence is best effort
            logger.warning("presence publish failed")
