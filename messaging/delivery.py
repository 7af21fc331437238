"""Delivery on one connection (protocol.md 6.3, 6.4) as a synchronous state machine.

`DeliveryEngine` holds where the connection stands in each conversation and decides what to push;
it does no I/O and reads no clock of its own. Each event (a connection authenticated, a live push,
an `ack`, a timer) returns the actions the consumer carries out: send a frame, read a page of the
log (`Pump`, whose rows are fed back with `rows_read`), arm a timer, record a cursor, close. So the
window, the retries, the gap hold and catch-up are tested without server, database or socket
(tests/messaging/test_delivery.py), and the consumer only authenticates, parses and relays.

The database is the source of truth and the channel layer a doorbell: per conversation the engine
tracks the next seq to push and the last acknowledged one, so a live event that is missing, late
or out of order is repaired from the database, and a device never gets a newer message before an
older one.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from conversations.errors import ConversationNotFoundError
from messaging.errors import AckTimeoutError, CursorBeyondLastSeqError
from messaging.selectors import ConversationPosition

# Rows read from the database per page.
PUMP_PAGE = 200
RETRY_MAX_S = 60.0
# Messages pushed again per retry (from the oldest unacknowledged ones).
RETRY_BATCH = 16
# How long a push that arrived ahead of a missing seq waits for it before the gap is read from
# the database (pushes of one conversation committed by two processes can cross in Redis).
GAP_WAIT_S = 0.1
# Live pushes per conversation remembered for the delivery-latency metric until acknowledged.
LATENCY_SAMPLES = 64
# At most one `typing` start relayed per conversation and second.
TYPING_MIN_INTERVAL_S = 1.0
# A conversation joined while connected may have messages committed before the subscription.
_UNKNOWN_LAST_SEQ = 2**63 - 1


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    """Send this frame text (a `message` frame, pre-rendered once per message)."""

    text: str


@dataclass(frozen=True)
class Pump:
    """Read these conversations' messages from the database, in order, while the window has
    room, at most `at_most` in all (None: no bound but the window). Carry it out by calling
    `next_read` and feeding each page to `rows_read` until `next_read` answers None."""

    conversation_ids: tuple[uuid.UUID, ...]
    at_most: int | None = None


@dataclass(frozen=True)
class ArmRetry:
    delay_s: float


@dataclass(frozen=True)
class ArmGapTimer:
    conversation_id: uuid.UUID
    delay_s: float


@dataclass(frozen=True)
class CancelGapTimer:
    conversation_id: uuid.UUID


@dataclass(frozen=True)
class RecordCursor:
    """Hand a cursor move to the cursor writer (messaging/cursors.py)."""

    conversation_id: uuid.UUID
    delivered_seq: int = 0
    read_seq: int = 0


@dataclass(frozen=True)
class ObserveLatency:
    """Seconds from storing to acknowledgement of live pushes (the delivery-latency metric)."""

    seconds: tuple[float, ...]


@dataclass(frozen=True)
class CaughtUp:
    """Send `caught_up`: every conversation behind at login has been pushed (`pushed` of them)."""

    pushed: int


@dataclass(frozen=True)
class Close:
    error: AckTimeoutError


Action = Push | Pump | ArmRetry | ArmGapTimer | CancelGapTimer | RecordCursor | ObserveLatency | CaughtUp | Close


@dataclass(frozen=True)
class Read:
    """One page to read: `(seq, frame text)` of `conversation_id` for seq > after, at most limit."""

    conversation_id: uuid.UUID
    after: int
    limit: int


# --- state --------------------------------------------------------------------------------------


class Stream:
    """One conversation on one connection: everything below `next_seq` has been pushed (or was
    acknowledged before), everything up to `acked` is acknowledged, `last_known` is the newest
    seq known to exist."""

    __slots__ = ("acked", "answered", "gap_armed", "held", "last_known", "next_seq", "read", "stored_at", "typing_at")

    def __init__(self, position: ConversationPosition) -> None:
        # A cursor stored beyond the log (before cursors were bounded) must not hide what comes.
        self.acked = min(position.delivered_seq, position.last_seq)
        self.read = position.read_seq
        self.next_seq = self.acked + 1
        self.last_known = position.last_seq
        self.typing_at: float | None = None
        # (seq, Unix time stored) of live pushes awaiting their ack, for the delivery-latency
        # metric; created on first use and bounded, so idle connections carry nothing.
        self.stored_at: deque[tuple[int, float]] | None = None
        # Pushes that arrived ahead of a missing seq (another process published it a moment
        # later), held briefly instead of reading the gap from the database at once.
        self.held: dict[int, tuple[bool, str]] | None = None  # seq -> (own send, frame text)
        self.gap_armed = False
        # Seqs of this connection's own sends already answered with `sent` and not yet
        # acknowledged: read back from the database (a full window, a gap, a retry) they are
        # counted as pushed but not sent again; the client has them. Created on first use.
        self.answered: set[int] | None = None


class DeliveryEngine:
    """The delivery state of one connection. `origin` is the connection's channel name (live
    pushes of its own sends carry it); `clock` is monotonic seconds and `wall` Unix time (for
    the latency metric), both injected."""

    def __init__(
        self,
        *,
        origin: str,
        window: int,
        retry_s: float,
        max_retries: int,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.origin = origin
        self.window = window
        self.retry_s = retry_s
        self.max_retries = max_retries
        self._clock = clock
        self._wall = wall
        self.streams: dict[uuid.UUID, Stream] = {}
        self.unacked = 0
        self.retry_armed = False
        self.retry_interval = retry_s
        self.retries_without_progress = 0
        self.last_progress = clock()
        self.catch_up_pending: set[uuid.UUID] = set()
        self.caught_up_sent = False
        self.catch_up_pushed = 0

    # --- queries ------------------------------------------------------------------------------

    def room(self) -> int:
        return self.window - self.unacked

    def stream(self, conversation_id: uuid.UUID) -> Stream:
        """The stream of a conversation this device follows; not found for any other."""
        stream = self.streams.get(conversation_id)
        if stream is None:
            raise ConversationNotFoundError()
        return stream

    def followed(self) -> list[uuid.UUID]:
        return list(self.streams)

    def needs_last_seq(self, conversation_id: uuid.UUID, seq: int) -> bool:
        """Whether a cursor at `seq` is beyond what this connection knows exists: ask the
        database (`learn_last_seq`) before judging it, newer messages may have committed."""
        return seq > self.stream(conversation_id).last_known

    # --- events -------------------------------------------------------------------------------

    def start(self, positions: Iterable[ConversationPosition]) -> list[Action]:
        """The connection authenticated (and subscribed): catch up every conversation behind."""
        for position in positions:
            self.streams[position.conversation_id] = Stream(position)
        self.catch_up_pending = {pk for pk, s in self.streams.items() if s.next_seq <= s.last_known}
        actions: list[Action] = []
        if self.catch_up_pending:
            actions.append(Pump(tuple(self.catch_up_pending)))
        return actions

    def joined(self, conversation_id: uuid.UUID, last_seq: int) -> list[Action]:
        """The account joined a conversation while connected (nothing if already followed)."""
        if conversation_id in self.streams:
            return []
        self.streams[conversation_id] = stream = Stream(ConversationPosition(conversation_id, last_seq, 0, 0))
        # Messages may have been sent before we subscribed: look in the database.
        stream.last_known = _UNKNOWN_LAST_SEQ
        return [Pump((conversation_id,))]

    def left(self, conversation_id: uuid.UUID) -> list[Action]:
        stream = self.streams.pop(conversation_id, None)
        self.catch_up_pending.discard(conversation_id)
        if stream is None:
            return []
        # Its pushes can no longer be acknowledged: they leave the window, which may let the
        # other conversations' waiting messages through.
        self.unacked -= max(0, stream.next_seq - 1 - stream.acked)
        actions: list[Action] = [CancelGapTimer(conversation_id)] if stream.gap_armed else []
        behind = tuple(pk for pk, s in self.streams.items() if self._behind(s))
        if behind and self.room() > 0:
            actions.append(Pump(behind))
        return actions

    def sent_answered(self, conversation_id: uuid.UUID, seq: int) -> None:
        """This connection's own send got its `sent` frame: never push it to this connection."""
        stream = self.streams.get(conversation_id)
        if stream is not None and seq > stream.acked:
            if stream.answered is None:
                stream.answered = set()
            stream.answered.add(seq)

    def learn_last_seq(self, conversation_id: uuid.UUID, last_seq: int) -> None:
        stream = self.streams.get(conversation_id)
        if stream is not None:
            stream.last_known = max(stream.last_known, last_seq)

    def acked(self, conversation_id: uuid.UUID, seq: int) -> list[Action]:
        """An `ack`: cumulative. Beyond the conversation's last seq (after `learn_last_seq`) it is
        refused (`CursorBeyondLastSeqError`); below the last one it changes nothing."""
        stream = self._cursor_stream(conversation_id, seq)
        if seq <= stream.acked:
            return []
        actions: list[Action] = []
        if stream.stored_at:
            now, latencies = self._wall(), []
            while stream.stored_at and stream.stored_at[0][0] <= seq:
                latencies.append(max(0.0, now - stream.stored_at.popleft()[1]))
            if latencies:
                actions.append(ObserveLatency(tuple(latencies)))
        pushed_unacked_before = stream.next_seq - 1 - stream.acked
        stream.acked = seq
        if stream.answered:
            stream.answered = {s for s in stream.answered if s > seq} or None
        stream.next_seq = max(stream.next_seq, seq + 1)
        self.unacked -= pushed_unacked_before - (stream.next_seq - 1 - stream.acked)
        self.last_progress = self._clock()
        self.retry_interval = self.retry_s
        self.retries_without_progress = 0
        actions.append(RecordCursor(conversation_id, delivered_seq=seq))
        # The window opened: push what waits in the database, oldest conversation state first.
        behind = tuple(pk for pk, s in self.streams.items() if s.next_seq <= s.last_known)
        if behind and self.room() > 0:
            actions.append(Pump(behind))
        return actions

    def read(self, conversation_id: uuid.UUID, seq: int) -> list[Action]:
        """A `read` mark: cumulative, bounded like an `ack`."""
        stream = self._cursor_stream(conversation_id, seq)
        if seq <= stream.read:
            return []
        stream.read = seq
        return [RecordCursor(conversation_id, read_seq=seq)]

    def live(
        self, conversation_id: uuid.UUID, messages: Sequence[tuple[int, str, str]], stored_at: float
    ) -> list[Action]:
        """A live event (`ConversationMessagesEvent`): `(seq, origin, frame text)` of new
        messages in seq order."""
        stream = self.streams.get(conversation_id)
        if stream is None or not messages:
            return []
        stream.last_known = max(stream.last_known, max(row[0] for row in messages))
        actions: list[Action] = []
        for seq, origin, text in messages:
            if seq < stream.next_seq:
                continue  # pushed already (catch-up, a gap repair, or a duplicate event)
            if self.room() <= 0:
                break  # a full window: acknowledgements will pump these from the database
            if seq > stream.next_seq:
                # Ahead of a missing seq: usually its event is a moment behind (another process
                # committed it), so hold this one briefly before reading the gap from the database.
                if stream.held is None:
                    stream.held = {}
                stream.held[seq] = (origin == self.origin, text)
                if not stream.gap_armed:
                    stream.gap_armed = True
                    actions.append(ArmGapTimer(conversation_id, GAP_WAIT_S))
                continue
            self._push_live(stream, seq, origin == self.origin, text, stored_at, actions)
            while stream.held and stream.next_seq in stream.held and self.room() > 0:
                held_own, held_text = stream.held.pop(stream.next_seq)
                self._push_live(stream, stream.next_seq, held_own, held_text, stored_at, actions)
        self._forget_held(conversation_id, stream, actions)
        return actions

    def gap_expired(self, conversation_id: uuid.UUID) -> list[Action]:
        """The missing push did not come: the database has it (and everything held after it)."""
        stream = self.streams.get(conversation_id)
        if stream is None:
            return []
        stream.gap_armed = False
        if stream.held:
            stream.held = None
            return [Pump((conversation_id,))]
        return []

    def retry_due(self) -> list[Action]:
        """The retry timer fired: nothing acknowledged for a while, push again from each oldest
        unacknowledged seq (at most `RETRY_BATCH`), or close after `max_retries` of them."""
        self.retry_armed = False
        if self.unacked <= 0:
            return []
        now = self._clock()
        if now - self.last_progress < self.retry_interval:
            self.retry_armed = True
            return [ArmRetry(self.retry_interval)]
        if self.retries_without_progress >= self.max_retries:
            # A client that reads nothing would have every retry pile up in the socket's write
            # buffer: close instead. It resumes from its cursor when it reconnects.
            return [Close(AckTimeoutError())]
        self.retries_without_progress += 1
        self.retry_interval = min(self.retry_interval * 2, RETRY_MAX_S)
        self.last_progress = now
        for stream in self.streams.values():
            if stream.next_seq - 1 > stream.acked:
                self.unacked -= stream.next_seq - 1 - stream.acked
                stream.next_seq = stream.acked + 1
        # Push again only the oldest few: a client that lost messages acknowledges them and the
        # window refills as usual; a client that reads nothing gets little more in its buffer.
        behind = tuple(pk for pk, s in self.streams.items() if s.next_seq <= s.last_known)
        return [Pump(behind, at_most=RETRY_BATCH)] if behind else []

    def pump_done(self) -> list[Action]:
        """After a `Pump` was carried out: re-arm the retry if pushes are still outstanding."""
        if self.unacked > 0 and not self.retry_armed:
            self.retry_armed = True
            return [ArmRetry(self.retry_interval)]
        return []

    def swept(self, last_seqs: dict[uuid.UUID, int]) -> list[Action]:
        """The sweeper read newer seqs than this connection heard of: pushes that never came."""
        newer = []
        for conversation_id, stream in self.streams.items():
            newest = last_seqs.get(conversation_id, 0)
            if newest > stream.last_known:
                stream.last_known = newest
                newer.append(conversation_id)
        return [Pump(tuple(newer))] if newer else []

    def caught_up(self) -> list[Action]:
        """`caught_up` once, when no conversation that was behind at login still is."""
        if self.caught_up_sent:
            return []
        self.catch_up_pending = {
            pk for pk in self.catch_up_pending if pk in self.streams and self._behind(self.streams[pk])
        }
        if self.catch_up_pending:
            return []
        self.caught_up_sent = True
        return [CaughtUp(self.catch_up_pushed)]

    def typing_relayed(self, conversation_id: uuid.UUID, *, started: bool) -> bool:
        """Whether to relay a `typing` frame: every stop, at most one start per second."""
        stream = self.stream(conversation_id)
        now = self._clock()
        if started and stream.typing_at is not None and now - stream.typing_at < TYPING_MIN_INTERVAL_S:
            return False
        stream.typing_at = now if started else None
        return True

    # --- pumping --------------------------------------------------------------------------------

    def next_read(self, conversation_id: uuid.UUID, at_most: int | None) -> Read | None:
        """The next page to read for a `Pump` of this conversation, or None: done (caught up
        with what is known, the window is full, or `at_most` more were pushed)."""
        stream = self.streams.get(conversation_id)
        if stream is None or not self._behind(stream) or self.room() <= 0:
            return None
        limit = min(self.room(), PUMP_PAGE)
        if at_most is not None:
            if at_most <= 0:
                return None
            limit = min(limit, at_most)
        return Read(conversation_id, after=stream.next_seq - 1, limit=limit)

    def rows_read(self, read: Read, rows: Sequence[tuple[int, str]]) -> tuple[list[Action], int]:
        """A page read for `read`: the frames to push, and how many messages count as pushed
        (own answered sends count without being sent again)."""
        stream = self.streams.get(read.conversation_id)
        if stream is None:
            return [], 0
        actions: list[Action] = []
        pushed = 0
        for seq, text in rows:
            if seq != stream.next_seq:  # a row this connection already pushed meanwhile
                continue
            if not (stream.answered and seq in stream.answered):
                actions.append(Push(text))
            stream.next_seq = seq + 1
            self._pushed(actions)
            pushed += 1
            if not self.caught_up_sent:
                self.catch_up_pushed += 1
        if len(rows) < read.limit:  # the database has nothing newer (events bring what commits later)
            stream.last_known = stream.next_seq - 1
        return actions, pushed

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _behind(stream: Stream) -> bool:
        return stream.next_seq <= stream.last_known

    def _cursor_stream(self, conversation_id: uuid.UUID, seq: int) -> Stream:
        stream = self.stream(conversation_id)
        if seq > stream.last_known:
            raise CursorBeyondLastSeqError(conversation_id, stream.last_known)
        return stream

    def _pushed(self, actions: list[Action]) -> None:
        self.unacked += 1
        if not self.retry_armed:
            self.retry_armed = True
            self.last_progress = self._clock()
            actions.append(ArmRetry(self.retry_interval))

    def _push_live(
        self, stream: Stream, seq: int, own: bool, text: str, stored_at: float, actions: list[Action]
    ) -> None:
        stream.next_seq = seq + 1
        if own:
            # Our own send: the client has it from the `sent` frame. It still counts as
            # unacknowledged, so a lost `sent` is repaired by the retry.
            self._pushed(actions)
            return
        actions.append(Push(text))
        self._pushed(actions)
        if stream.stored_at is None:
            stream.stored_at = deque(maxlen=LATENCY_SAMPLES)
        stream.stored_at.append((seq, stored_at))

    def _forget_held(self, conversation_id: uuid.UUID, stream: Stream, actions: list[Action]) -> None:
        """Drop held pushes that are no longer ahead (pushed meanwhile), and the timer with them."""
        if stream.held:
            for seq in [seq for seq in stream.held if seq < stream.next_seq]:
                del stream.held[seq]
        if not stream.held and stream.gap_armed:
            stream.gap_armed = False
            actions.append(CancelGapTimer(conversation_id))
