"""A lean realtime device for tests and benchmarks: docs/protocol.md section 6 on `websockets`.

Not the SDK's realtime client: one asyncio object per device that speaks the frame protocol and
keeps exactly the state the contract asks a client to keep, and records what happened for
measurement:

* authenticates with a `hello` frame (or the token subprotocol), waits for `welcome`;
* sends envelopes sealed with the SDK's one seal, `client.core.envelope` (AES-256-GCM + Ed25519, real ChatKeys from a
  `DeviceProfile`); an in-memory outbox keeps every send until its `sent` frame (or a definitive
  error) and is replayed in order after every reconnect;
* verifies and decrypts every `message` frame with the SDK's one open in the order of section 2.3
  (version, epoch, membership, vouched sender, signature, ChatKey, AES-GCM + padding + JSON);
* drops duplicates by `(sender_device_id, client_message_id)`, holds out-of-order messages, releases
  them in `seq` order, acknowledges cumulatively the highest contiguous `seq`, and asks with `fetch`
  for a gap below a pushed message that persists longer than `gap_fetch_s` (a hole below only its
  own messages is the server not having pushed yet, not a loss);
* reconnects with jittered exponential backoff (seeded `random.Random`) over a list of URLs.

Times are `time.monotonic_ns()`, one clock for every process on the machine, so a sender in one
process and a receiver in another can be compared.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import termios
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from client import protocol as proto
from client.core.envelope import envelope_open as core_envelope_open
from client.core.envelope import envelope_seal
from client.crypto.encoding import b64d
from client.crypto.errors import DecryptError, DecryptFailure
from harness.provision import DeviceProfile

log = logging.getLogger("harness.wsclient")

SUBPROTOCOL = Subprotocol("e2ee.v1")
# Close codes after which reconnecting cannot help (section 6.1).
FATAL_CLOSE_CODES = {4401, 4403}
# Errors about one send that mean "try again", not "this send is refused" (section 6.2).
RETRYABLE_SEND_ERRORS = {"too_many_in_flight", "rate_limited", "internal_error"}


def ws_url(http_url: str) -> str:
    """`http://host:port` -> `ws://host:port/ws/v1/`."""
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws/v1/"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws/v1/"
    return base + "/ws/v1/"


class FatalConnectionError(Exception):
    """The server refused this device for good (bad token, device not active)."""


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class OutboxItem:
    frame_id: str
    conversation_id: uuid.UUID
    client_message_id: bytes
    frame: str  # the `send` frame, JSON text, identical on every retransmission
    created_ns: int  # when the message was sealed and queued
    first_sent_ns: int | None = None  # when the frame first went out on a socket
    last_sent_ns: int | None = None
    transmissions: int = 0
    generation: int = -1  # connection generation it was last transmitted on
    not_before_ns: int = 0  # after a retryable error: do not transmit before this


@dataclass
class SentRecord:
    conversation_id: uuid.UUID
    client_message_id: bytes
    created_ns: int
    first_sent_ns: int | None
    acked_ns: int | None = None  # the `sent` frame arrived
    seq: int | None = None
    created: bool | None = None  # the server's `created` flag on the first `sent` answer
    transmissions: int = 0
    error: str | None = None  # a definitive error code


@dataclass(frozen=True)
class ReceivedRecord:
    conversation_id: uuid.UUID
    seq: int
    sender_device_id: uuid.UUID
    client_message_id: bytes
    decrypted_ns: int
    body: str | None  # the text, when kept


@dataclass
class DeviceStats:
    connects: int = 0  # successful authentications
    reconnects: int = 0  # authentications after the first
    connect_failures: int = 0
    drops_injected: int = 0
    duplicates: int = 0  # message frames for a (sender device, message id) already held
    own_echoes: int = 0  # this device's own messages pushed back (catch-up) after its `sent`
    out_of_order: int = 0  # first arrivals with a seq below one already seen (conversation)
    fetches: int = 0
    acks: int = 0
    resends: int = 0  # outbox retransmissions
    errors: list[str] = field(default_factory=list)  # error frame codes
    decrypt_failures: list[str] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)


@dataclass
class ConversationState:
    contiguous: int = 0  # every seq <= this is held
    held: dict[int, ReceivedRecord | None] = field(default_factory=dict)  # seq > contiguous; None = own
    seen: dict[tuple[uuid.UUID, bytes], int] = field(default_factory=dict)  # (sender, id) -> seq
    highest_arrival: int = 0
    acked: int = 0
    gap_since_ns: int | None = None
    fetch_in_flight: str | None = None
    released: list[ReceivedRecord] = field(default_factory=list)  # others' messages, in seq order


# --------------------------------------------------------------------------------------------
# Crypto


class _ProfileKeys:
    """The keys a bench device holds (`client.core.envelope.EnvelopeKeys`): its profile's ChatKeys,
    and the signing keys of the member devices whose vouches it verified when provisioned."""

    def __init__(self, profile: DeviceProfile) -> None:
        self._profile = profile

    def sender_key(self, envelope: proto.Envelope) -> bytes:
        conversation = self._profile.conversations.get(envelope.conversation_id)
        if conversation is None:
            raise DecryptError(DecryptFailure.TAMPERED, "not a conversation of this device")
        sender = self._profile.trusted.get(envelope.sender_device_id)
        if sender is None or sender.username != envelope.sender_username or sender.username not in conversation.members:
            raise DecryptError(
                DecryptFailure.UNVOUCHED_DEVICE, f"device {envelope.sender_device_id} is not a vouched member device"
            )
        return sender.ed25519_public_key

    def chat_key(self, envelope: proto.Envelope) -> bytes:
        chat_key = self._profile.conversations[envelope.conversation_id].chat_keys.get(envelope.epoch)
        if chat_key is None:
            raise DecryptError(DecryptFailure.MISSING_KEY, f"no key for epoch {envelope.epoch}")
        return chat_key


def envelope_open(profile: DeviceProfile, envelope: dict[str, Any]) -> tuple[uuid.UUID, bytes, dict[str, Any]]:
    """Verify and decrypt one `Envelope` (section 2.3 "Receiving", steps 1-5) with the SDK's one
    open and this device's profile; return (sender device id, client message id, payload). Replay
    (step 6) is the caller's dedup; the device lists seen (2.19) are not checked (the profile's
    lists are trusted). Raises DecryptError with the typed reason, or KeyError/ValueError on a
    malformed envelope."""
    parsed = proto.Envelope.parse(envelope)
    payload = core_envelope_open(parsed, _ProfileKeys(profile))
    return parsed.sender_device_id, parsed.client_message_id, payload


# --------------------------------------------------------------------------------------------
# The device


class RealtimeDevice:
    """One device's realtime connection, kept up by `run()` until `close()`."""

    def __init__(
        self,
        profile: DeviceProfile,
        urls: Sequence[str],
        *,
        rng: random.Random | None = None,
        auth: str = "hello",
        keep_bodies: bool = True,
        ack_delay_s: float = 0.002,
        gap_fetch_s: float = 1.0,
        resend_after_s: float = 10.0,
        max_in_flight: int = 500,
        backoff_s: tuple[float, float] = (0.05, 1.0),
        open_timeout_s: float = 10.0,
        on_release: Callable[[ReceivedRecord], None] | None = None,
    ) -> None:
        if auth not in ("hello", "subprotocol"):
            raise ValueError("auth is 'hello' or 'subprotocol'")
        self.profile = profile
        self.urls = [u if u.startswith("ws") else ws_url(u) for u in urls]
        self.rng = rng or random.Random(profile.device_id.int)
        self.auth = auth
        self.keep_bodies = keep_bodies
        self.ack_delay_s = ack_delay_s
        self.gap_fetch_s = gap_fetch_s
        self.resend_after_s = resend_after_s
        self.max_in_flight = max_in_flight
        self.backoff_s = backoff_s
        self.open_timeout_s = open_timeout_s
        self.on_release = on_release

        self.stats = DeviceStats()
        self.conversations: dict[uuid.UUID, ConversationState] = {
            cid: ConversationState() for cid in profile.conversations
        }
        self.outbox: dict[str, OutboxItem] = {}  # insertion order is send order
        self.sent: dict[bytes, SentRecord] = {}  # client message id -> record
        self.welcome: dict[str, Any] | None = None
        self.caught_up = asyncio.Event()
        self.connected = asyncio.Event()
        self.url_index = 0

        self._ws: ClientConnection | None = None
        self._generation = 0
        self._counter = 0
        self._closing = False
        self._fatal: FatalConnectionError | None = None
        self._ack_scheduled = False
        self._task: asyncio.Task[None] | None = None
        self._pending_fetches: dict[str, uuid.UUID] = {}

    # -- public ----------------------------------------------------------------------------------

    @property
    def device_id(self) -> uuid.UUID:
        return self.profile.device_id

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"device {self.device_id}")
        return self._task

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(websockets.WebSocketException, OSError):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, FatalConnectionError):
                await self._task

    def drop(self) -> bool:
        """Cut the TCP connection without a close frame (fault injection); `run` reconnects."""
        ws = self._ws
        if ws is None:
            return False
        self.stats.drops_injected += 1
        ws.transport.abort()
        return True

    def send_text(self, conversation_id: uuid.UUID, body: str) -> OutboxItem:
        """Seal a text message, queue it in the outbox, and transmit it now if connected."""
        keys = self.profile.conversations[conversation_id]
        epoch = max(keys.chat_keys)
        now = time.monotonic_ns()
        sealed = envelope_seal(
            chat_key=keys.chat_keys[epoch],
            conversation_id=conversation_id,
            epoch=epoch,
            sender=self.profile.device,
            payload={"type": "text", "body": body, "sent_at_ms": time.time_ns() // 1_000_000},
            lists_seen=keys.lists_seen,
        )
        self._counter += 1
        frame_id = f"s{self._counter}"
        frame = json.dumps(
            {"type": "send", "id": frame_id, "conversation_id": str(conversation_id), "envelope": sealed.body}
        )
        item = OutboxItem(
            frame_id=frame_id,
            conversation_id=conversation_id,
            client_message_id=sealed.client_message_id,
            frame=frame,
            created_ns=now,
        )
        self.outbox[frame_id] = item
        self.sent[sealed.client_message_id] = SentRecord(
            conversation_id=conversation_id,
            client_message_id=sealed.client_message_id,
            created_ns=now,
            first_sent_ns=None,
        )
        self._pump()
        return item

    def released(self, conversation_id: uuid.UUID) -> list[ReceivedRecord]:
        return self.conversations[conversation_id].released

    def delivered_total(self) -> int:
        return sum(len(c.released) for c in self.conversations.values())

    # -- connection loop -------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                await self._session()
                failures = 0
            except FatalConnectionError as exc:
                self._fatal = exc
                raise
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                if self._closing:
                    return
                if not self.connected.is_set():
                    self.stats.connect_failures += 1
                log.debug("device %s: connection ended: %r", self.device_id, exc)
            finally:
                self._ws = None
                self.connected.clear()
            if self._closing:
                return
            # Next URL after a failure to connect; jittered exponential backoff, capped.
            failures += 1
            if failures > 1:
                self.url_index += 1
            low, high = self.backoff_s
            delay = min(high, low * 2 ** min(failures - 1, 10)) * (0.5 + self.rng.random())
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        subprotocols = [SUBPROTOCOL]
        if self.auth == "subprotocol":
            subprotocols.append(Subprotocol(f"e2ee.token.{self.profile.token}"))
        async with connect(
            self.url,
            subprotocols=subprotocols,
            compression=None,
            open_timeout=self.open_timeout_s,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            max_size=2**20,
        ) as ws:
            if self.auth == "hello":
                await ws.send(json.dumps({"type": "hello", "v": 1, "token": self.profile.token}))
            try:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), timeout=self.open_timeout_s))
            except websockets.ConnectionClosed:
                if ws.close_code in FATAL_CLOSE_CODES:
                    raise FatalConnectionError(f"closed with {ws.close_code} before welcome") from None
                raise
            if welcome.get("type") != "welcome":
                await self._refused(ws, welcome)
            self.welcome = welcome
            self._ws = ws
            self._generation += 1
            self.caught_up.clear()
            self.stats.connects += 1
            if self.stats.connects > 1:
                self.stats.reconnects += 1
            for state in self.conversations.values():
                state.fetch_in_flight = None
            self._pending_fetches.clear()
            self.connected.set()
            self._pump()  # the outbox, in order
            ticker = asyncio.get_running_loop().create_task(self._tick(ws))
            try:
                async for raw in ws:
                    if isinstance(raw, bytes):
                        self.stats.errors.append("binary_frame_from_server")
                        continue
                    self._dispatch(json.loads(raw))
            finally:
                ticker.cancel()
                if ws.close_code is not None:
                    self.stats.close_codes.append(ws.close_code)
                    if ws.close_code in FATAL_CLOSE_CODES:
                        raise FatalConnectionError(f"closed with {ws.close_code}")

    async def _refused(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        code = frame.get("code", frame.get("type"))
        self.stats.errors.append(str(code))
        with contextlib.suppress(websockets.WebSocketException, asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), timeout=2)
        raise FatalConnectionError(f"refused: {code} (close {ws.close_code})")

    async def _tick(self, ws: ClientConnection) -> None:
        """Every 100 ms: fetch persisting gaps, retransmit sends unanswered for too long."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic_ns()
            # Our own sends are not pushed back live: while one is unanswered, the hole it leaves
            # in the sequence is expected, not a lost push.
            own_in_flight = {i.conversation_id for i in self.outbox.values() if i.generation == self._generation}
            for cid, state in self.conversations.items():
                if not state.held or state.fetch_in_flight is not None or cid in own_in_flight:
                    state.gap_since_ns = None if cid in own_in_flight else state.gap_since_ns
                    continue
                if min(state.held) == state.contiguous + 1:
                    continue
                if state.highest_arrival <= state.contiguous:
                    # Only our own messages (from `sent`) lie beyond the hole: the server has not
                    # pushed the others' yet, which is lag, not loss (it never skips a seq when
                    # pushing). Fetching here only added load when the servers were behind.
                    state.gap_since_ns = None
                    continue
                if state.gap_since_ns is None:
                    state.gap_since_ns = now
                elif now - state.gap_since_ns > self.gap_fetch_s * 1e9:
                    self._fetch(cid, state)
            resend_before = now - int(self.resend_after_s * 1e9)
            for item in self.outbox.values():
                if item.generation == self._generation and item.last_sent_ns and item.last_sent_ns < resend_before:
                    item.generation = -1  # eligible again on this connection
            self._pump()

    # -- frames out ------------------------------------------------------------------------------

    def _write(self, frame: str) -> None:
        ws = self._ws
        if ws is None or ws.transport.is_closing():
            return
        # Fire and forget, in call order: websockets writes each message whole and in order; the
        # task only waits for the write buffer to drain.
        task = asyncio.get_running_loop().create_task(ws.send(frame))
        task.add_done_callback(_ignore_closed)

    def _pump(self) -> None:
        """Transmit outbox items not yet sent on this connection, in order, within the in-flight cap."""
        if self._ws is None or not self.connected.is_set():
            return
        now = time.monotonic_ns()
        in_flight = sum(1 for i in self.outbox.values() if i.generation == self._generation)
        for item in self.outbox.values():
            if in_flight >= self.max_in_flight:
                break
            if item.generation == self._generation:
                continue
            if item.not_before_ns > now:
                break  # keep the order: nothing after a deferred send goes before it
            item.generation = self._generation
            item.transmissions += 1
            if item.transmissions > 1:
                self.stats.resends += 1
            item.first_sent_ns = item.first_sent_ns or now
            item.last_sent_ns = now
            record = self.sent[item.client_message_id]
            record.first_sent_ns = item.first_sent_ns
            record.transmissions = item.transmissions
            in_flight += 1
            self._write(item.frame)

    def _fetch(self, cid: uuid.UUID, state: ConversationState) -> None:
        self._counter += 1
        frame_id = f"f{self._counter}"
        state.fetch_in_flight = frame_id
        self._pending_fetches[frame_id] = cid
        self.stats.fetches += 1
        # Only the missing range: asking for 500 from the cursor re-reads everything already held.
        missing = min(state.held) - state.contiguous - 1 if state.held else 1
        limit = max(1, min(500, missing))
        self._write(
            json.dumps(
                {
                    "type": "fetch",
                    "id": frame_id,
                    "conversation_id": str(cid),
                    "after": state.contiguous,
                    "limit": limit,
                }
            )
        )

    def _schedule_ack(self) -> None:
        if self._ack_scheduled:
            return
        self._ack_scheduled = True
        asyncio.get_running_loop().call_later(self.ack_delay_s, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_scheduled = False
        if self._ws is None:
            return
        for cid, state in self.conversations.items():
            if state.contiguous > state.acked:
                state.acked = state.contiguous
                self.stats.acks += 1
                self._write(json.dumps({"type": "ack", "conversation_id": str(cid), "seq": state.contiguous}))

    # -- frames in -------------------------------------------------------------------------------

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._on_message(frame)
        elif kind == "sent":
            self._on_sent(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "fetched":
            cid = self._pending_fetches.pop(str(frame.get("id")), None)
            if cid is not None:
                state = self.conversations[cid]
                state.fetch_in_flight = None
                state.gap_since_ns = None
        elif kind == "caught_up":
            self.caught_up.set()
        # receipt, presence, typing, conversation, pong: not needed here

    def _on_sent(self, frame: dict[str, Any]) -> None:
        item = self.outbox.pop(str(frame.get("id")), None)
        if item is None:
            return  # an answer to a retransmission already answered
        record = self.sent[item.client_message_id]
        seq = int(frame["seq"])
        if record.seq is None:
            record.seq = seq
            record.acked_ns = time.monotonic_ns()
            record.created = bool(frame.get("created"))
        elif record.seq != seq:
            self.stats.errors.append(f"sent_seq_changed:{record.seq}->{seq}")
        self._hold(item.conversation_id, seq, (self.device_id, item.client_message_id), None)
        self._pump()

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        self.stats.errors.append(code)
        frame_id = frame.get("id")
        item = self.outbox.get(str(frame_id)) if frame_id is not None else None
        if item is None:
            if frame_id is not None and str(frame_id) in self._pending_fetches:
                cid = self._pending_fetches.pop(str(frame_id))
                self.conversations[cid].fetch_in_flight = None
            return
        if code in RETRYABLE_SEND_ERRORS:
            retry_after = float((frame.get("extra") or {}).get("retry_after_s", 0.05))
            item.generation = -1
            item.not_before_ns = time.monotonic_ns() + int(retry_after * 1e9)
            return
        del self.outbox[item.frame_id]
        self.sent[item.client_message_id].error = code

    def _on_message(self, frame: dict[str, Any]) -> None:
        envelope = frame["envelope"]
        cid = uuid.UUID(frame["conversation_id"])
        state = self.conversations.get(cid)
        if state is None:
            self.stats.decrypt_failures.append(f"tampered:unknown conversation {cid}")
            return
        seq = int(envelope["seq"])
        key = (uuid.UUID(envelope["sender_device_id"]), b64d(envelope["client_message_id"], length=16))
        first = state.seen.get(key)
        if first is not None:
            if first != seq:
                self.stats.decrypt_failures.append(f"replayed:{first}->{seq}")
            elif key[0] == self.device_id:
                self.stats.own_echoes += 1
            else:
                self.stats.duplicates += 1
            return
        if seq <= state.contiguous or seq in state.held:
            # A different message under a seq we hold: the server contradicts itself.
            self.stats.decrypt_failures.append(f"seq_reused:{seq}")
            return
        if seq < state.highest_arrival:
            self.stats.out_of_order += 1
        state.highest_arrival = max(state.highest_arrival, seq)
        body: str | None = None
        try:
            sender_device_id, client_message_id, payload = envelope_open(self.profile, envelope)
        except DecryptError as exc:
            # Definitively failed: recorded, and the seq counts as handled (section 6.4).
            self.stats.decrypt_failures.append(f"{exc.reason.value}:{seq}")
            self._hold(cid, seq, key, None)
            return
        except (KeyError, ValueError, TypeError) as exc:
            self.stats.decrypt_failures.append(f"malformed:{seq}:{exc!r}")
            self._hold(cid, seq, key, None)
            return
        now = time.monotonic_ns()
        if sender_device_id == self.device_id:
            # Our own message in catch-up, before (or without) its `sent` frame.
            self._own_catch_up(client_message_id, seq)
            self._hold(cid, seq, key, None)
            return
        if self.keep_bodies:
            value = payload.get("body")
            body = value if isinstance(value, str) else None
        record = ReceivedRecord(
            conversation_id=cid,
            seq=seq,
            sender_device_id=sender_device_id,
            client_message_id=client_message_id,
            decrypted_ns=now,
            body=body,
        )
        self._hold(cid, seq, key, record)

    def _own_catch_up(self, client_message_id: bytes, seq: int) -> None:
        record = self.sent.get(client_message_id)
        if record is not None and record.seq is None:
            record.seq = seq
            record.acked_ns = time.monotonic_ns()
            record.created = True

    def _hold(self, cid: uuid.UUID, seq: int, key: tuple[uuid.UUID, bytes], record: ReceivedRecord | None) -> None:
        state = self.conversations[cid]
        if key in state.seen:
            return
        state.seen[key] = seq
        if seq <= state.contiguous or seq in state.held:
            return
        state.held[seq] = record
        advanced = False
        while state.contiguous + 1 in state.held:
            state.contiguous += 1
            released = state.held.pop(state.contiguous)
            advanced = True
            if released is not None:
                state.released.append(released)
                if self.on_release is not None:
                    self.on_release(released)
        if advanced:
            state.gap_since_ns = None
            self._schedule_ack()


def _ignore_closed(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, websockets.WebSocketException | OSError):
        log.warning("send failed: %r", exc)


# --------------------------------------------------------------------------------------------
# A device that never reads


class StalledDevice:
    """Authenticates, then never reads its socket again and never acknowledges anything.

    websockets reads ahead into a queue of at most `max_queue` messages and then stops reading
    the socket, so the kernel buffers fill and the server's writes to this connection block.
    """

    def __init__(self, profile: DeviceProfile, url: str) -> None:
        self.profile = profile
        self.url = url if url.startswith("ws") else ws_url(url)
        self._ws: ClientConnection | None = None

    async def open(self) -> dict[str, Any]:
        self._ws = await connect(
            self.url,
            subprotocols=[SUBPROTOCOL],
            compression=None,
            max_queue=1,
            ping_interval=None,
            close_timeout=1,
        )
        await self._ws.send(json.dumps({"type": "hello", "v": 1, "token": self.profile.token}))
        welcome: dict[str, Any] = json.loads(await asyncio.wait_for(self._ws.recv(), timeout=10))
        if welcome.get("type") != "welcome":
            raise FatalConnectionError(f"refused: {welcome}")
        return welcome

    def unread_bytes(self) -> int:
        """Bytes the server has written that sit unread in this socket's kernel receive queue."""
        if self._ws is None:
            return 0
        sock = self._ws.transport.get_extra_info("socket")
        if sock is None:
            return 0
        buffer = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer)
        return int(buffer[0])

    def abort(self) -> None:
        if self._ws is not None:
            self._ws.transport.abort()


def default_rng(seed: int | None = None) -> random.Random:
    return random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
