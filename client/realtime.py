"""The asynchronous realtime client (docs/protocol.md §6).

`RealtimeClient` keeps one WebSocket connection open for a `Session`, reconnecting with
exponential backoff and jitter, and turns the frame protocol into a small API:

    client = RealtimeClient(session, MessageStore.open_in(home))
    client.on_message(lambda m: print(m.seq, m.sender_username, m.text))
    await client.start()
    pending = await client.send_text(conversation_id, "hello")
    seq = await pending.wait()
    await client.close()

Guarantees, each from §6:

* Sends go through the persistent outbox (ciphertext only) and are replayed in order after every
  (re)connect, and from the refused one on after a transient refusal (sender order, §6.3), until
  a `sent` frame gives their seq; the server's idempotency makes a resend harmless.
* Every pushed message is decrypted (or its failure reason recorded) and stored before the
  cumulative `ack` of the contiguous seq is sent; a duplicate (same position or same message id)
  is not stored twice and only acknowledged again. Acknowledgements are coalesced: one `ack` per
  conversation per `ack_delay_s` (50 ms) covers every message stored meanwhile, so a catch-up of
  hundreds of messages costs the server a handful of frames instead of one per message.
* A gap (a pushed seq n + 2 held without n + 1) that lasts `gap_fetch_after_s` is filled with
  `fetch`. A hole below nothing but this device's own sends (known from `sent`) is not a gap: the
  server has simply not pushed the others' messages yet (§6.4).
* The sending device's own messages are stored from their `sent` frame (decrypting its own
  envelope), so the contiguous cursor passes over them.
* Missing keys heal themselves (§4.8): a message stored as `missing_key` keeps its envelope; the
  client files a key request for the epoch (once), files it again with backoff (`key_retry`)
  until it is served, and on `key_available` decrypts the held messages in place and reports each
  again to `on_message`, now with its payload. It answers other devices' key requests itself
  (`client.key_requests` decides who is entitled), including those filed while it was offline.

Messages are opened on the event loop by the session's sans-I/O core; what the core lacks (keys,
directories) and other session calls doing blocking HTTP run in a worker thread, one at a time.
The message store is used from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from client import frames as fr
from client import protocol as proto
from client.core.envelope import envelope_open
from client.core.needs import Fetches, Missing
from client.crypto.errors import DecryptError, DecryptFailure
from client.errors import (
    RealtimeAuthError,
    RealtimeDisconnectedError,
    RealtimeNotConnectedError,
    SdkError,
    SendFailedError,
)
from client.key_requests import KeyRequestOutcome, key_request_answer, key_request_file, key_requests_answer_open
from client.pacing import FRAME_RATE, SEND_RATE, Rate, TokenBucket
from client.payloads import payload_text
from client.session import MessageResult, ReceivedMessage, Session
from client.store.messages import MessageStore, OutboxEntry
from client.transport.websocket import WebSocketConnection, connect

logger = logging.getLogger(__name__)

T = TypeVar("T")
Rng = Callable[[int], bytes]
Callback = Callable[[T], Awaitable[None] | None]

# Errors about one send that a later resend can cure; any other error code is definitive (§6.2-6.3).
TRANSIENT_SEND_ERRORS = frozenset({"too_many_in_flight", "rate_limited", "internal_error"})
FETCH_ANSWER_TIMEOUT_S = 10.0
MAX_RESEALS = 3  # per queued message: epochs do not rotate that often


@dataclass(frozen=True)
class IncomingMessage:
    """A message this device has just stored: decrypted (`payload`) or failed (`failure`)."""

    conversation_id: uuid.UUID
    seq: int
    sender_username: str
    sender_device_id: uuid.UUID
    client_message_id: bytes
    payload: dict[str, Any] | None
    failure: DecryptFailure | None
    failure_detail: str | None
    created_at: str
    warnings: tuple[str, ...] = ()  # ReceivedMessage.warnings (e.g. device_list_stale); not stored

    @property
    def text(self) -> str:
        return payload_text(self.payload, self.failure)


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: `initial * factor**attempt`, capped, with "equal jitter" (half fixed,
    half random), so a fleet of clients does not reconnect in lockstep after a server restart."""

    initial: float = 0.5
    cap: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int, rand: random.Random) -> float:
        ceiling = min(self.cap, self.initial * self.factor ** min(attempt, 32))
        return ceiling / 2 + rand.uniform(0, ceiling / 2)


@dataclass
class PendingSend:
    """A queued message. `await pending.wait()` gives its seq once the server stored it."""

    conversation_id: uuid.UUID
    client_message_id: bytes
    position: int
    _future: asyncio.Future[int] = field(repr=False)

    async def wait(self, timeout: float | None = None) -> int:
        """The seq; `SendFailedError` if the server refused it for good."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._future)

    def done(self) -> bool:
        return self._future.done()


class _Callbacks(Generic[T]):
    def __init__(self) -> None:
        self._callbacks: list[Callback[T]] = []

    def add(self, callback: Callback[T]) -> Callback[T]:
        self._callbacks.append(callback)
        return callback

    async def emit(self, value: T) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(value)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # an application callback must not break delivery or acks
                logger.exception("a realtime callback failed")


class RealtimeClient:
    def __init__(
        self,
        session: Session,
        store: MessageStore,
        *,
        server_url: str | None = None,
        backoff: Backoff | None = None,
        gap_fetch_after_s: float = 1.0,
        ack_delay_s: float = 0.05,
        open_timeout: float = 10.0,
        rng: Rng = os.urandom,
        jitter: random.Random | None = None,
        key_retry: Backoff | None = None,
        send_retry: Backoff | None = None,
        send_rate: Rate = SEND_RATE,
        frame_rate: Rate = FRAME_RATE,
    ) -> None:
        self.session = session
        self.store = store
        self.server_url = server_url or session.secrets.server_url
        self.backoff = backoff or Backoff()
        self.gap_fetch_after_s = gap_fetch_after_s
        self.ack_delay_s = ack_delay_s
        self.open_timeout = open_timeout
        self._rng = rng
        self._jitter = jitter or random.Random()
        self._messages: _Callbacks[IncomingMessage] = _Callbacks()
        self._receipts: _Callbacks[fr.Receipt] = _Callbacks()
        self._presence: _Callbacks[fr.Presence] = _Callbacks()
        self._typing: _Callbacks[fr.Typing] = _Callbacks()
        self._conversations: _Callbacks[fr.ConversationJoined] = _Callbacks()
        self._link_requests: _Callbacks[fr.LinkRequest] = _Callbacks()
        self._device_lists: _Callbacks[fr.DeviceListChanged] = _Callbacks()
        self._member_changes: _Callbacks[fr.ConversationMembers] = _Callbacks()
        self._send_failures: _Callbacks[tuple[PendingSend | None, SendFailedError]] = _Callbacks()
        self._errors: _Callbacks[fr.ErrorFrame] = _Callbacks()
        self._key_answers: _Callbacks[KeyRequestOutcome] = _Callbacks()
        self.key_retry = key_retry or Backoff(initial=1.0, cap=60.0)
        # (conversation, epoch) -> set when its key may have arrived; one request loop per slot.
        self._key_waits: dict[tuple[uuid.UUID, int], asyncio.Event] = {}
        self._conn: WebSocketConnection | None = None
        self._connected = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session_lock = asyncio.Lock()
        # The outbox is sent by one pump per connection (`_pump_outbox`), woken by `_outbox_wake`:
        # every entry once per connection in queue order; after a transient refusal, nothing for
        # a pause (`send_retry`, or the server's `retry_after_s` if longer), then again from the
        # refused entry on, in queue order, even entries still awaiting their answer (the server
        # refuses everything behind a refused send until it comes again: sender order, §6.3);
        # and never faster than `send_rate` (per device) and `frame_rate` (every frame of a
        # connection), below the server's limits (client.pacing).
        self.send_retry = send_retry or Backoff(initial=0.5, cap=30.0)
        self._send_bucket = TokenBucket(send_rate)
        self._frame_rate = frame_rate
        self._frame_bucket = TokenBucket(frame_rate)
        self._outbox_wake = asyncio.Event()
        self._sent_upto = 0  # outbox position last sent on the current connection
        self._rewinds = 0  # times `_sent_upto` went back (a refusal): the pump reads the outbox again
        self._resend_at = 0.0  # monotonic time before which nothing is sent from the outbox
        self._send_attempt = 0  # pauses since the last `sent`: the exponent of `send_retry`
        self.send_frames = 0  # `send` frames written so far (tests and diagnostics)
        self._pending: dict[int, PendingSend] = {}
        self._reseals: dict[int, int] = {}  # outbox position -> times sealed again (stale_epoch)
        self._acked: dict[uuid.UUID, int] = {}
        # Acknowledgements waiting for the coalescing delay: conversation -> (seq, force).
        self._acks_due: dict[uuid.UUID, tuple[int, bool]] = {}
        self._acks_flush: asyncio.TimerHandle | None = None
        self._gaps: dict[uuid.UUID, float] = {}  # conversation -> when the gap was first seen
        self._pushed_max: dict[uuid.UUID, int] = {}  # highest seq pushed on this connection
        self._fetching: dict[uuid.UUID, tuple[str, float]] = {}
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self.auth_error: RealtimeAuthError | None = None
        self.connections = 0  # successful connections so far (tests and diagnostics)

    # -- callbacks -------------------------------------------------------------------------------

    def on_message(self, callback: Callback[IncomingMessage]) -> Callback[IncomingMessage]:
        """Called once per message stored from another device (or another device of this account)."""
        return self._messages.add(callback)

    def on_receipt(self, callback: Callback[fr.Receipt]) -> Callback[fr.Receipt]:
        return self._receipts.add(callback)

    def on_presence(self, callback: Callback[fr.Presence]) -> Callback[fr.Presence]:
        return self._presence.add(callback)

    def on_typing(self, callback: Callback[fr.Typing]) -> Callback[fr.Typing]:
        return self._typing.add(callback)

    def on_conversation(self, callback: Callback[fr.ConversationJoined]) -> Callback[fr.ConversationJoined]:
        return self._conversations.add(callback)

    def on_link_request(self, callback: Callback[fr.LinkRequest]) -> Callback[fr.LinkRequest]:
        """Called when a new device asks to join this account: ask the person for its link code
        and approve with `Session.approve_link(code)`."""
        return self._link_requests.add(callback)

    def on_device_list(self, callback: Callback[fr.DeviceListChanged]) -> Callback[fr.DeviceListChanged]:
        """Called when an account's signed device list changed (the session re-reads it first)."""
        return self._device_lists.add(callback)

    def on_members(self, callback: Callback[fr.ConversationMembers]) -> Callback[fr.ConversationMembers]:
        """Called when a conversation's members changed (the session forgets its cached view first,
        so the next send checks the epoch against the new members, protocol.md 2.14)."""
        return self._member_changes.add(callback)

    def on_send_failed(
        self, callback: Callback[tuple[PendingSend | None, SendFailedError]]
    ) -> Callback[tuple[PendingSend | None, SendFailedError]]:
        """Called when the server refuses a queued message for good (it leaves the outbox)."""
        return self._send_failures.add(callback)

    def on_key_request(self, callback: Callback[KeyRequestOutcome]) -> Callback[KeyRequestOutcome]:
        """Called for each key request of another device this client considered (answered or
        refused, with the reason)."""
        return self._key_answers.add(callback)

    def on_error(self, callback: Callback[fr.ErrorFrame]) -> Callback[fr.ErrorFrame]:
        """Error frames that answer no request of this client."""
        return self._errors.add(callback)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        """Run the connection loop in the background (see `run`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="e2ee-realtime")
            self._task.add_done_callback(_retrieve)

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until `close()`; raise `RealtimeAuthError` if the
        server refuses this device (reconnecting would not help)."""
        attempt = 0
        while not self._closed.is_set():
            token = self.session.secrets.token
            if not token:
                self.auth_error = RealtimeAuthError(0, "not_authenticated", "this device has no token; log in first")
                raise self.auth_error
            try:
                conn = await connect(self.server_url, token, open_timeout=self.open_timeout)
            except RealtimeAuthError as exc:
                self.auth_error = exc
                raise
            except RealtimeDisconnectedError as exc:
                logger.info("realtime connection failed: %s", exc)
                await self._pause(attempt)
                attempt += 1
                continue
            connected_at = time.monotonic()
            try:
                await self._serve(conn)
            except RealtimeAuthError as exc:
                self.auth_error = exc
                raise
            except RealtimeDisconnectedError as exc:
                logger.info("realtime connection lost: %s", exc)
            finally:
                await self._disconnected(conn)
            if time.monotonic() - connected_at >= self.backoff.cap:
                attempt = 0  # it was a working connection: retry soon; else keep backing off
            await self._pause(attempt)
            attempt += 1

    async def close(self) -> None:
        """Stop: close the connection, end the loop. Queued messages stay in the outbox."""
        self._closed.set()
        conn = self._conn
        if conn is not None:
            await conn.close()
        task = self._task
        if task is not None:
            # The loop ends at once unless it is inside a blocking session call (HTTP for keys):
            # give that a moment, then abandon it (the message it handled stays unacknowledged).
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                task.cancel()
                await asyncio.wait({task})
            # Its outcome (an auth failure, a crash) was surfaced by wait_connected / wait_stopped.
        for task in list(self._background):
            task.cancel()
        for pending in self._pending.values():
            if not pending._future.done():
                pending._future.set_exception(
                    RealtimeNotConnectedError("the client closed; the message stays in the outbox for the next run")
                )
                pending._future.exception()  # retrieved: nobody may be waiting
        self._pending.clear()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until a connection is authenticated; `RealtimeAuthError` if the device was refused."""
        async with asyncio.timeout(timeout):
            while not self._connected.is_set():
                self._raise_if_stopped()
                waiter = asyncio.ensure_future(self._connected.wait())
                watched: set[asyncio.Future[Any]] = {waiter}
                if self._task is not None:
                    watched.add(self._task)
                try:
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            self._raise_if_stopped()

    async def wait_stopped(self) -> None:
        """Until the connection loop ends for good: after `close()`, or by raising the
        `RealtimeAuthError` that stopped it."""
        if self._task is None:
            return
        await asyncio.wait({self._task})
        self._raise_if_stopped()

    async def wait_caught_up(self, timeout: float | None = None) -> None:
        """Until the current connection's `caught_up` frame (§6.4)."""
        async with asyncio.timeout(timeout):
            await self._caught_up.wait()

    def _raise_if_stopped(self) -> None:
        if self.auth_error is not None:
            raise self.auth_error
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc

    async def _pause(self, attempt: int) -> None:
        delay = self.backoff.delay(attempt, self._jitter)
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _serve(self, conn: WebSocketConnection) -> None:
        self._conn = conn
        self._sent_upto = 0  # everything unsent goes again on this connection, in order
        self._rewinds += 1
        self._resend_at = 0.0
        self._send_attempt = 0  # a new connection: whatever refused sends may be over
        self._frame_bucket = TokenBucket(self._frame_rate)  # the server counts per connection
        self._acked = {}
        self._acks_due = {}  # for the previous connection: the server pushes those again
        self._pushed_max = {}
        self._fetching = {}
        self._caught_up.clear()
        self.connections += 1
        self._connected.set()
        pump = asyncio.create_task(self._pump_outbox(conn))
        self._spawn(self._report_reads(conn))
        self._spawn(self._answer_open_key_requests())
        for conversation_id, epoch in self.store.held_epochs():
            self._key_wanted(conversation_id, epoch)
        watcher = asyncio.create_task(self._watch_gaps(conn))
        try:
            async for frame in conn.frames():
                await self._handle(conn, frame)
        finally:
            watcher.cancel()
            pump.cancel()
            if self._acks_flush is not None:
                self._acks_flush.cancel()
                self._acks_flush = None

    async def _disconnected(self, conn: WebSocketConnection) -> None:
        self._conn = None
        self._connected.clear()
        for frame_id, waiter in list(self._waiters.items()):
            if not waiter.done():
                waiter.set_exception(RealtimeNotConnectedError("the connection ended before the answer"))
                waiter.exception()  # retrieved here: the asker may have timed out already
            self._waiters.pop(frame_id, None)
        await conn.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, conn: WebSocketConnection, frame: dict[str, Any]) -> bool:
        """Send on `conn` once the connection's frame budget allows; False (and nothing else) if
        it is gone: the reader will reconnect."""
        await _paced(self._frame_bucket)
        if self._conn is not conn:
            return False
        try:
            await conn.send(frame)
            return True
        except (RealtimeDisconnectedError, RealtimeAuthError):
            return False

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # -- sending ---------------------------------------------------------------------------------

    async def send_text(self, conversation_id: uuid.UUID, text: str, *, now_ms: int | None = None) -> PendingSend:
        sent_at = now_ms if now_ms is not None else int(time.time() * 1000)
        return await self.send_payload(conversation_id, {"type": "text", "body": text, "sent_at_ms": sent_at})

    async def send_payload(
        self, conversation_id: uuid.UUID, payload: dict[str, Any], *, attachments: list[uuid.UUID] | None = None
    ) -> PendingSend:
        """Encrypt, queue in the outbox (ciphertext only), send now if connected. `attachments`
        names the media blobs the payload refers to (§4.5; upload them first with
        `Session.upload_file`)."""
        envelope, client_message_id = await self._in_session(
            functools.partial(self._seal, attachments=attachments), conversation_id, payload
        )
        entry = self.store.outbox_add(
            conversation_id=conversation_id, client_message_id=client_message_id, envelope=envelope
        )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pending = PendingSend(conversation_id, client_message_id, entry.position, future)
        self._pending[entry.position] = pending
        self._outbox_wake.set()
        return pending

    def _seal(
        self,
        conversation_id: uuid.UUID,
        payload: dict[str, Any],
        *,
        client_message_id: bytes | None = None,
        attachments: list[uuid.UUID] | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Encrypt and sign for the conversation's current epoch (blocking: may fetch keys)."""
        conversation = self.session.conversation_for_send(conversation_id)
        request, sealed_id = self.session.seal_send(
            conversation, payload, client_message_id=client_message_id, rng=self._rng, attachments=attachments
        )
        body = request.json
        assert body is not None
        return body, sealed_id

    async def _pump_outbox(self, conn: WebSocketConnection) -> None:
        """Send the outbox on `conn` while it lasts: every entry after `_sent_upto`, in queue
        order, once any pause is over (a refusal moves `_sent_upto` back, see `_resend_later`)."""
        batch: list[OutboxEntry] = []
        rewinds = self._rewinds
        while self._conn is conn and not self._closed.is_set():
            self._outbox_wake.clear()
            pause = self._resend_at - time.monotonic()
            if pause > 0:
                await _wait(self._closed, pause)  # no wake-up: a new message waits its turn too
                continue
            if rewinds != self._rewinds:  # gone back: what was read ahead skips the refused ones
                rewinds, batch = self._rewinds, []
            batch = [e for e in batch if e.position > self._sent_upto] or self.store.outbox(
                after_position=self._sent_upto
            )
            if not batch:
                await self._outbox_wake.wait()
                continue
            entry = batch.pop(0)
            self._sent_upto = entry.position
            await _paced(self._send_bucket)
            frame = fr.send_frame(
                frame_id=f"o{entry.position}", conversation_id=entry.conversation_id, envelope=entry.envelope
            )
            if not await self._send(conn, frame):
                return  # gone; a new connection sends the whole outbox again
            self.send_frames += 1

    async def _on_sent(self, conn: WebSocketConnection, frame: fr.Sent) -> None:
        position = _position(frame.id)
        entry = self.store.outbox_get(position) if position is not None else None
        if entry is None or entry.client_message_id != frame.client_message_id:
            return  # a second answer to a resend already handled
        envelope = proto.Envelope.parse(
            {
                **entry.envelope,
                "seq": frame.seq,
                "conversation_id": str(entry.conversation_id),
                "sender_username": self.session.username,
                "created_at": frame.created_at,
            }
        )
        self._send_attempt = 0  # the server takes messages again
        await self._take_in(conn, envelope, pushed=False)
        self.store.outbox_remove(entry.position)
        pending = self._pending.pop(entry.position, None)
        if pending is not None and not pending._future.done():
            pending._future.set_result(frame.seq)

    async def _on_send_error(self, conn: WebSocketConnection, position: int, frame: fr.ErrorFrame) -> None:
        entry = self.store.outbox_get(position)
        if entry is None:
            if frame.code in TRANSIENT_SEND_ERRORS and self._conn is conn:
                # A transient refusal of a message stored meanwhile (a `sent` for another copy
                # came first). If the server now waits for it to come again (§6.3, sender
                # order), it never will: only a new connection lets the sends behind it through.
                logger.info("refused a message already stored: reconnecting")
                await conn.close()
            return
        if frame.code in TRANSIENT_SEND_ERRORS:
            self._resend_later(position, frame.extra.get("retry_after_s"))
            return
        if frame.code == "stale_epoch" and self._reseals.get(position, 0) < MAX_RESEALS:
            # The conversation moved to a new epoch while the message was queued: seal it again
            # for the current epoch, same message id, same place in the outbox.
            self._reseals[position] = self._reseals.get(position, 0) + 1
            try:
                envelope = await self._in_session(self._reseal, entry)
            except (proto.ApiError, SdkError, DecryptError) as exc:
                logger.warning("cannot seal queued message %s again: %s", position, exc)
            else:
                self.store.outbox_replace(position, envelope)
                self._send_again_from(position)
                return
        self.store.outbox_remove(position)
        error = SendFailedError(frame.code, frame.message, frame.extra)
        pending = self._pending.pop(position, None)
        if pending is not None and not pending._future.done():
            pending._future.set_exception(error)
            pending._future.exception()  # marked retrieved: the failure also goes to on_send_failed
        await self._send_failures.emit((pending, error))

    def _reseal(self, entry: OutboxEntry) -> dict[str, Any]:
        """Open this device's own queued envelope with its epoch's ChatKey and seal the payload
        again for the conversation's current epoch (blocking: fetches the conversation and keys).
        The plaintext exists only in memory, here."""
        session = self.session
        old = proto.Envelope.parse(
            {
                **entry.envelope,
                "seq": 0,
                "conversation_id": str(entry.conversation_id),
                "sender_username": session.username,
                "created_at": "",
            }
        )
        conversation = session.conversation(entry.conversation_id, refresh=True)
        own = _OwnKeys(session.secrets.device.ed25519_public_key, session.chat_key(conversation, old.epoch))
        payload = envelope_open(old, own)
        attachments = [uuid.UUID(blob_id) for blob_id in entry.envelope.get("attachments", [])]
        envelope, _ = self._seal(
            entry.conversation_id, payload, client_message_id=old.client_message_id, attachments=attachments or None
        )
        return envelope

    def _send_again_from(self, position: int) -> None:
        """Send the outbox again from `position` on, in queue order (entries with a `sent` have
        left it; one whose answer is still on its way is answered twice, the second ignored)."""
        if position <= self._sent_upto:
            self._sent_upto = position - 1
            self._rewinds += 1
        self._outbox_wake.set()

    def _resend_later(self, position: int, retry_after: object) -> None:
        """Send the outbox again from the entry on after a pause, and nothing meanwhile (F1 of
        issue 13: answering every refusal with a resend at once is what keeps a server refusing).
        From the entry on, not the entry alone: the server refused what came behind it too, and
        stores nothing behind a refused send before it (§6.3). The refusals of one outage share a
        pause; each new pause is longer, up to `send_retry.cap` (or the server's `retry_after_s`),
        until a `sent` or a new connection shows the server takes messages again."""
        now = time.monotonic()
        floor = float(retry_after) if isinstance(retry_after, int | float) and retry_after > 0 else 0.0
        if now >= self._resend_at:  # the first refusal since the last pause ended: a new pause
            delay = self.send_retry.delay(self._send_attempt, self._jitter)
            self._send_attempt += 1
            self._resend_at = now + max(delay, floor)
        else:
            self._resend_at = max(self._resend_at, now + floor)
        self._send_again_from(position)

    # -- receiving -------------------------------------------------------------------------------

    async def _handle(self, conn: WebSocketConnection, frame: fr.ServerFrame) -> None:
        if isinstance(frame, fr.MessageFrame):
            await self._take_in(conn, frame.envelope)
        elif isinstance(frame, fr.Sent):
            await self._on_sent(conn, frame)
        elif isinstance(frame, fr.Fetched):
            await self._on_fetched(frame)
        elif isinstance(frame, fr.CaughtUp):
            self._caught_up.set()
        elif isinstance(frame, fr.Receipt):
            for row in frame.receipts:
                self.store.record_receipt(
                    conversation_id=frame.conversation_id,
                    username=row.username,
                    device_id=row.device_id,
                    delivered_seq=row.delivered_seq,
                    read_seq=row.read_seq,
                )
            await self._receipts.emit(frame)
        elif isinstance(frame, fr.Typing):
            await self._typing.emit(frame)
        elif isinstance(frame, fr.Presence):
            if not self._answer(frame.id, frame.users):
                await self._presence.emit(frame)
        elif isinstance(frame, fr.ConversationJoined):
            await self._conversations.emit(frame)
        elif isinstance(frame, fr.ConversationMembers):
            self.session.members_changed(frame.conversation_id)
            await self._member_changes.emit(frame)
        elif isinstance(frame, fr.LinkRequest):
            await self._link_requests.emit(frame)
        elif isinstance(frame, fr.DeviceListChanged):
            self.session.forget_directory(frame.username)
            await self._device_lists.emit(frame)
        elif isinstance(frame, fr.KeyRequestFrame):
            self._spawn(self._answer_key_request(frame.key_request))
        elif isinstance(frame, fr.KeyAvailable):
            waiting = self._key_waits.get((frame.conversation_id, frame.epoch))
            if waiting is not None:
                waiting.set()
        elif isinstance(frame, fr.Pong):
            self._answer(frame.id, None)
        elif isinstance(frame, fr.ErrorFrame):
            await self._on_error(conn, frame)
        # Welcome (repeated) and unknown frame types are ignored (§6.2 forward compatibility).

    def _answer(self, frame_id: str | None, value: Any) -> bool:
        waiter = self._waiters.pop(frame_id, None) if frame_id else None
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(value)
        return True

    async def _on_error(self, conn: WebSocketConnection, frame: fr.ErrorFrame) -> None:
        position = _position(frame.id)
        if position is not None:
            await self._on_send_error(conn, position, frame)
            return
        if frame.id is not None:
            for cid, (fetch_id, _) in list(self._fetching.items()):
                if fetch_id == frame.id:
                    del self._fetching[cid]
            waiter = self._waiters.pop(frame.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(SendFailedError(frame.code, frame.message, frame.extra))
                return
        logger.warning("realtime error frame: %s", frame.code)
        await self._errors.emit(frame)

    async def _take_in(self, conn: WebSocketConnection, envelope: proto.Envelope, *, pushed: bool = True) -> None:
        """Store one message (decrypted or with its failure), then acknowledge (§6.4). `pushed`:
        it came as a `message` frame (not from this device's own `sent`)."""
        cid, seq = envelope.conversation_id, envelope.seq
        if pushed:
            self._pushed_max[cid] = max(seq, self._pushed_max.get(cid, 0))
        accepted = self.store.accepted_position(envelope.sender_device_id, envelope.client_message_id)
        if self.store.has_position(cid, seq) or accepted == (cid, seq):
            await self._queue_ack(conn, cid, force=True)  # a duplicate: the server did not see our ack
            return
        payload: dict[str, Any] | None = None
        failure: DecryptFailure | None = None
        detail: str | None = None
        warnings: tuple[str, ...] = ()
        if accepted is not None:
            failure = DecryptFailure.REPLAYED
            detail = f"already received as message {accepted[1]} of conversation {accepted[0]}"
        else:
            try:
                result = await self._receive(envelope)
            except (proto.ApiError, SdkError) as exc:
                # Not a verdict on the message (the server or network failed while fetching keys):
                # leave it unacknowledged, the server pushes it again.
                logger.warning("cannot process message %s of %s yet: %s", seq, cid, exc)
                return
            if isinstance(result, ReceivedMessage):
                payload, warnings = result.payload, result.warnings
            else:
                failure, detail = result.reason, result.detail
        stored, contiguous = self.store.store_message(
            conversation_id=cid,
            seq=seq,
            sender_username=envelope.sender_username,
            sender_device_id=envelope.sender_device_id,
            client_message_id=envelope.client_message_id,
            epoch=envelope.epoch,
            created_at=envelope.created_at,
            payload=payload,
            failure=failure.value if failure is not None else None,
            failure_detail=detail,
        )
        if stored and (
            failure == DecryptFailure.MISSING_KEY
            or (failure is not None and self.session.key_refused(cid, envelope.epoch))
        ):
            self.store.hold(envelope)
            self._key_wanted(cid, envelope.epoch)
        await self._queue_ack(conn, cid, contiguous=contiguous, force=not stored)
        if self._pushed_max.get(cid, 0) > contiguous:  # a pushed message beyond a hole
            self._gaps.setdefault(cid, time.monotonic())
        else:
            self._gaps.pop(cid, None)
        if stored and envelope.sender_device_id != self.session.device_id:
            await self._messages.emit(
                IncomingMessage(
                    conversation_id=cid,
                    seq=seq,
                    sender_username=envelope.sender_username,
                    sender_device_id=envelope.sender_device_id,
                    client_message_id=envelope.client_message_id,
                    payload=payload,
                    failure=failure,
                    failure_detail=detail,
                    created_at=envelope.created_at,
                    warnings=warnings,
                )
            )

    async def _queue_ack(
        self, conn: WebSocketConnection, conversation_id: uuid.UUID, *, contiguous: int | None = None, force: bool
    ) -> None:
        """Acknowledge after `ack_delay_s` (at once with 0), together with whatever else is
        stored meanwhile."""
        seq = contiguous if contiguous is not None else self.store.contiguous_seq(conversation_id)
        if self.ack_delay_s <= 0:
            await self._ack(conn, conversation_id, seq=seq, force=force)
            return
        due_seq, due_force = self._acks_due.get(conversation_id, (0, False))
        self._acks_due[conversation_id] = (max(seq, due_seq), force or due_force)
        if self._acks_flush is None:
            self._acks_flush = asyncio.get_running_loop().call_later(
                self.ack_delay_s, lambda: self._spawn(self._flush_acks(conn))
            )

    async def _flush_acks(self, conn: WebSocketConnection) -> None:
        self._acks_flush = None
        due, self._acks_due = self._acks_due, {}
        for conversation_id, (seq, force) in due.items():
            await self._ack(conn, conversation_id, seq=seq, force=force)

    async def _ack(self, conn: WebSocketConnection, conversation_id: uuid.UUID, *, seq: int, force: bool) -> None:
        if seq <= 0 or (not force and seq <= self._acked.get(conversation_id, 0)):
            return
        if await self._send(conn, fr.ack_frame(conversation_id, seq)):
            self._acked[conversation_id] = max(seq, self._acked.get(conversation_id, 0))

    async def _watch_gaps(self, conn: WebSocketConnection) -> None:
        """Fetch the missing range of a conversation whose gap outlived `gap_fetch_after_s`."""
        tick = max(0.01, min(0.25, self.gap_fetch_after_s / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for cid, since in list(self._gaps.items()):
                fetching = self._fetching.get(cid)
                if fetching is not None and now - fetching[1] < FETCH_ANSWER_TIMEOUT_S:
                    continue
                if now - since < self.gap_fetch_after_s:
                    continue
                after = self.store.contiguous_seq(cid)
                missing = self.store.highest_seq(cid) - after
                if missing <= 0:
                    self._gaps.pop(cid, None)
                    continue
                frame_id = self._next_id("f")
                self._fetching[cid] = (frame_id, now)
                limit = min(missing, fr.MAX_FETCH_LIMIT)
                await self._send(conn, fr.fetch_frame(frame_id=frame_id, conversation_id=cid, after=after, limit=limit))

    async def _on_fetched(self, frame: fr.Fetched) -> None:
        fetching = self._fetching.get(frame.conversation_id)
        if fetching is not None and fetching[0] == frame.id:
            del self._fetching[frame.conversation_id]
        if frame.conversation_id in self._gaps:
            # Still a gap (more than one page missing): ask again at once.
            self._gaps[frame.conversation_id] = time.monotonic() - self.gap_fetch_after_s

    async def _in_session(self, function: Callable[..., T], *args: Any) -> T:
        async with self._session_lock:
            return await asyncio.to_thread(function, *args)

    async def _receive(self, envelope: proto.Envelope) -> MessageResult:
        """Open one envelope: on the event loop, since the core does no I/O; only what it lacks
        (a directory, this device's keys of a new epoch) is fetched, in a worker thread. Under
        the session lock, as the core's caches are shared with the other session calls."""
        async with self._session_lock:
            fetches = Fetches()
            while True:
                outcome = self.session.receive_step(envelope, fetches)
                if not isinstance(outcome, Missing):
                    return outcome
                await asyncio.to_thread(self.session.fetch, outcome.need, fetches)

    # -- missing keys (§4.8) -----------------------------------------------------------------------

    def _key_wanted(self, conversation_id: uuid.UUID, epoch: int) -> None:
        slot = (conversation_id, epoch)
        if slot not in self._key_waits and not self._closed.is_set():
            self._key_waits[slot] = asyncio.Event()
            self._spawn(self._key_request_loop(conversation_id, epoch))

    async def _key_request_loop(self, conversation_id: uuid.UUID, epoch: int) -> None:
        """File the key request, again after each backoff delay, until the key arrives and no held
        message of the epoch is left `missing_key`."""
        slot = (conversation_id, epoch)
        attempt = 0
        try:
            while not self._closed.is_set():
                arrived = self._key_waits[slot]
                arrived.clear()
                try:
                    info = await self._in_session(key_request_file, self.session, conversation_id, epoch)
                    served = info.status == "served"
                except (proto.ApiError, SdkError) as exc:
                    logger.info("key request for epoch %s of %s failed: %s", epoch, conversation_id, exc)
                    served = False
                if not served:
                    try:
                        await asyncio.wait_for(arrived.wait(), timeout=self.key_retry.delay(attempt, self._jitter))
                    except TimeoutError:
                        attempt += 1
                        continue
                if await self._recover_held(conversation_id, epoch):
                    return
                attempt += 1
                await self._pause_keys(attempt)
        finally:
            self._key_waits.pop(slot, None)

    async def _pause_keys(self, attempt: int) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=self.key_retry.delay(attempt, self._jitter))
        except TimeoutError:
            pass

    async def _recover_held(self, conversation_id: uuid.UUID, epoch: int) -> bool:
        """Decrypt the messages held for the epoch's key, update them in the store and report
        them to `on_message`; True once none is left waiting for the key."""
        for envelope in self.store.held(conversation_id, epoch):
            try:
                result = await self._receive(envelope)
            except (proto.ApiError, SdkError) as exc:
                logger.info("cannot decrypt held message %s of %s yet: %s", envelope.seq, conversation_id, exc)
                return False
            payload: dict[str, Any] | None = None
            failure: DecryptFailure | None = None
            detail: str | None = None
            if isinstance(result, ReceivedMessage):
                payload = result.payload
            elif result.reason == DecryptFailure.MISSING_KEY or self.session.key_refused(conversation_id, epoch):
                return False  # no usable key yet (none, or one refused): the others lack it too
            else:
                failure, detail = result.reason, result.detail
            if not self.store.held_resolve(
                conversation_id,
                envelope.seq,
                payload=payload,
                failure=failure.value if failure is not None else None,
                failure_detail=detail,
            ):
                payload, failure = None, DecryptFailure.REPLAYED
                detail = "this message id was already accepted at another position"
            if envelope.sender_device_id != self.session.device_id:
                await self._messages.emit(
                    IncomingMessage(
                        conversation_id=conversation_id,
                        seq=envelope.seq,
                        sender_username=envelope.sender_username,
                        sender_device_id=envelope.sender_device_id,
                        client_message_id=envelope.client_message_id,
                        payload=payload,
                        failure=failure,
                        failure_detail=detail,
                        created_at=envelope.created_at,
                    )
                )
        return True

    async def _answer_key_request(self, request: proto.KeyRequestInfo) -> None:
        try:
            outcome = await self._in_session(key_request_answer, self.session, request)
        except (proto.ApiError, SdkError, DecryptError) as exc:
            logger.warning("cannot answer key request %s: %s", request.request_id, exc)
            return
        await self._key_answers.emit(outcome)

    async def answer_key_requests(self) -> None:
        """Answer every open key request this device may answer now: after the person verified a
        contact (`Session.mark_verified`), without waiting for the requester's next retry."""
        await self._answer_open_key_requests()

    async def _answer_open_key_requests(self) -> None:
        """Answer the key requests filed while this device was offline (catch-up on connect)."""
        try:
            outcomes = await self._in_session(key_requests_answer_open, self.session)
        except (proto.ApiError, SdkError, DecryptError) as exc:
            logger.warning("cannot answer open key requests: %s", exc)
            return
        for outcome in outcomes:
            await self._key_answers.emit(outcome)

    # -- receipts, typing, presence --------------------------------------------------------------

    async def mark_read(self, conversation_id: uuid.UUID, seq: int) -> None:
        """Raise this device's read cursor (a cumulative read receipt, §6.5); sent now if connected,
        else after the next connect."""
        cursor = self.store.mark_read(conversation_id, seq)
        conn = self._conn
        if conn is not None and await self._send(conn, fr.read_frame(conversation_id, cursor)):
            self.store.read_reported(conversation_id, cursor)

    async def _report_reads(self, conn: WebSocketConnection) -> None:
        for conversation_id, seq in self.store.unreported_reads():
            if not await self._send(conn, fr.read_frame(conversation_id, seq)):
                return
            self.store.read_reported(conversation_id, seq)

    async def typing(self, conversation_id: uuid.UUID, active: bool) -> bool:
        """Tell the other members this device is (or stopped) typing; False if not connected
        (typing is ephemeral and never queued)."""
        conn = self._conn
        return conn is not None and await self._send(conn, fr.typing_frame(conversation_id, active=active))

    async def presence(self, usernames: list[str], *, timeout: float = 10.0) -> dict[str, bool]:
        """Which of `usernames` are online (§6.6); users sharing no conversation read as offline."""
        users: dict[str, bool] = await self._request(
            lambda frame_id: fr.presence_query_frame(frame_id=frame_id, usernames=usernames), "p", timeout
        )
        return users

    async def ping(self, *, timeout: float = 10.0) -> None:
        await self._request(fr.ping_frame, "q", timeout)

    async def _request(self, build: Callable[[str], dict[str, Any]], prefix: str, timeout: float) -> Any:
        conn = self._conn
        if conn is None:
            raise RealtimeNotConnectedError("not connected")
        frame_id = self._next_id(prefix)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[frame_id] = waiter
        try:
            if not await self._send(conn, build(frame_id)):
                raise RealtimeNotConnectedError("the connection ended")
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            self._waiters.pop(frame_id, None)

    # -- local reads ---------------------------------------------------------------------------

    def pending_sends(self) -> list[PendingSend]:
        return list(self._pending.values())


@dataclass(frozen=True)
class _OwnKeys:
    """The keys of this device's own queued envelope (`envelope_open`'s `EnvelopeKeys`)."""

    signing_key: bytes
    epoch_key: bytes

    def sender_key(self, envelope: proto.Envelope) -> bytes:
        return self.signing_key

    def chat_key(self, envelope: proto.Envelope) -> bytes:
        return self.epoch_key


async def _paced(bucket: TokenBucket) -> None:
    """Wait until `bucket` lets one more through, and spend it."""
    while (delay := bucket.delay(time.monotonic())) > 0:
        await asyncio.sleep(delay)
    bucket.take(time.monotonic())


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` seconds have passed."""
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout)
    except TimeoutError:
        pass


def _position(frame_id: str | None) -> int | None:
    """The outbox position in a send frame id `o<position>`."""
    if frame_id is None or not frame_id.startswith("o") or not frame_id[1:].isdigit():
        return None
    return int(frame_id[1:])


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark the loop's outcome as seen: an auth failure is kept in `auth_error` and re-raised by
    `wait_connected`, and must not also be logged as "never retrieved"."""
    if not task.cancelled():
        task.exception()
