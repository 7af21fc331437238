"""The delivery engine (messaging/delivery.py) alone: no server, no database, no socket, no clock.

Each test plays one connection: events in, actions out; "the database" is a dict of frame texts.
"""

from __future__ import annotations

import uuid

import pytest

from conversations.errors import ConversationNotFoundError
from messaging import delivery
from messaging.delivery import (
    ArmGapTimer,
    ArmRetry,
    CancelGapTimer,
    CaughtUp,
    Close,
    DeliveryEngine,
    ObserveLatency,
    Pump,
    Push,
    RecordCursor,
)
from messaging.errors import AckTimeoutError, CursorBeyondLastSeqError
from messaging.selectors import ConversationPosition

ME = "channel.me"
C1 = uuid.UUID("00000000-0000-4000-8000-000000000001")
C2 = uuid.UUID("00000000-0000-4000-8000-000000000002")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(conversation_id: uuid.UUID, seq: int) -> str:
    return f"message {conversation_id.int} {seq}"


def engine(clock: Clock, *, window: int = 512, retry_s: float = 5.0, max_retries: int = 3) -> DeliveryEngine:
    return DeliveryEngine(origin=ME, window=window, retry_s=retry_s, max_retries=max_retries, clock=clock, wall=clock)


def position(conversation_id: uuid.UUID, last_seq: int, delivered: int = 0, read: int = 0) -> ConversationPosition:
    return ConversationPosition(conversation_id, last_seq, delivered, read)


def carry_out(e: DeliveryEngine, actions: list[delivery.Action], log: dict[uuid.UUID, int]) -> list[delivery.Action]:
    """What the consumer does: carry out pumps against `log` (conversation -> last seq stored)
    and return every other action, in order, then what `caught_up` adds."""
    done: list[delivery.Action] = []
    for action in actions:
        if not isinstance(action, Pump):
            done.append(action)
            continue
        budget = action.at_most
        for conversation_id in action.conversation_ids:
            while (read := e.next_read(conversation_id, budget)) is not None:
                last = log.get(conversation_id, 0)
                seqs = range(read.after + 1, min(last, read.after + read.limit) + 1)
                page, pushed = e.rows_read(read, [(seq, text(conversation_id, seq)) for seq in seqs])
                done += page
                if budget is not None:
                    budget -= pushed
    return done + e.caught_up()


def pushed(actions: list[delivery.Action]) -> list[str]:
    return [action.text for action in actions if isinstance(action, Push)]


def test_a_device_that_was_away_gets_everything_after_its_cursor_in_order_then_caught_up() -> None:
    clock = Clock()
    e = engine(clock)
    actions = carry_out(e, e.start([position(C1, 5, delivered=2), position(C2, 3)]), {C1: 5, C2: 3})
    assert pushed(actions) == [text(C1, 3), text(C1, 4), text(C1, 5), text(C2, 1), text(C2, 2), text(C2, 3)]
    assert actions.count(ArmRetry(5.0)) == 1
    assert actions[-1] == CaughtUp(pushed=6)


def test_an_up_to_date_device_is_caught_up_at_once_and_only_once() -> None:
    e = engine(Clock())
    assert carry_out(e, e.start([position(C1, 4, delivered=4)]), {C1: 4}) == [CaughtUp(pushed=0)]
    assert e.caught_up() == []


def test_the_window_holds_back_pushes_until_acknowledgements_open_it() -> None:
    e = engine(Clock(), window=3)
    log = {C1: 7}
    first = carry_out(e, e.start([position(C1, 7)]), log)
    assert pushed(first) == [text(C1, 1), text(C1, 2), text(C1, 3)]
    assert CaughtUp(pushed=3) not in first  # still behind
    after_ack = carry_out(e, e.acked(C1, 2), log)
    assert after_ack[0] == RecordCursor(C1, delivered_seq=2)
    assert pushed(after_ack) == [text(C1, 4), text(C1, 5)]
    assert pushed(carry_out(e, e.acked(C1, 5), log)) == [text(C1, 6), text(C1, 7)]


def test_live_pushes_go_out_in_order_and_duplicates_and_older_ones_are_dropped() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 2, delivered=2)]), {C1: 2})
    actions = e.live(C1, [(3, "", text(C1, 3)), (4, "", text(C1, 4))], stored_at=0.0)
    assert pushed(actions) == [text(C1, 3), text(C1, 4)]
    assert pushed(e.live(C1, [(2, "", text(C1, 2)), (4, "", text(C1, 4))], stored_at=0.0)) == []


def test_the_connections_own_send_is_not_pushed_to_it_but_counts_until_acknowledged() -> None:
    e = engine(Clock(), window=2)
    carry_out(e, e.start([position(C1, 0)]), {})
    assert pushed(e.live(C1, [(1, ME, text(C1, 1)), (2, "other", text(C1, 2))], stored_at=0.0)) == [text(C1, 2)]
    assert e.room() == 0
    assert pushed(e.live(C1, [(3, "other", text(C1, 3))], stored_at=0.0)) == []  # the window is full


def test_own_sends_read_back_from_the_database_are_not_pushed_to_the_sending_connection() -> None:
    e = engine(Clock(), window=1)
    log = {C1: 3}
    carry_out(e, e.start([position(C1, 0)]), {})
    assert pushed(e.live(C1, [(1, "other", text(C1, 1))], stored_at=0.0)) == [text(C1, 1)]
    e.sent_answered(C1, 2)
    assert pushed(e.live(C1, [(2, ME, text(C1, 2)), (3, "other", text(C1, 3))], stored_at=0.0)) == []
    assert pushed(carry_out(e, e.acked(C1, 1), log)) == []  # 2 is ours: counted, not sent
    assert pushed(carry_out(e, e.acked(C1, 2), log)) == [text(C1, 3)]


def test_a_push_ahead_of_a_missing_one_is_held_and_released_in_order_when_it_comes() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 0)]), {})
    held = e.live(C1, [(2, "", text(C1, 2))], stored_at=0.0)
    assert held == [ArmGapTimer(C1, delivery.GAP_WAIT_S)]
    actions = e.live(C1, [(1, "", text(C1, 1))], stored_at=0.0)
    assert pushed(actions) == [text(C1, 1), text(C1, 2)]
    assert actions[-1] == CancelGapTimer(C1)


def test_a_gap_that_stays_open_is_read_from_the_database() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 0)]), {})
    e.live(C1, [(2, "", text(C1, 2)), (3, "", text(C1, 3))], stored_at=0.0)
    assert pushed(carry_out(e, e.gap_expired(C1), {C1: 3})) == [text(C1, 1), text(C1, 2), text(C1, 3)]


def test_unacknowledged_pushes_are_pushed_again_oldest_first_then_the_connection_is_closed() -> None:
    clock = Clock()
    e = engine(clock, retry_s=5.0, max_retries=2)
    log = {C1: 20}
    carry_out(e, e.start([position(C1, 20)]), log)
    clock.now += 5.0
    again = carry_out(e, e.retry_due(), log) + e.pump_done()
    assert pushed(again) == [text(C1, seq) for seq in range(1, delivery.RETRY_BATCH + 1)]
    assert ArmRetry(10.0) in again  # the interval doubles
    clock.now += 10.0
    assert pushed(carry_out(e, e.retry_due(), log))[0] == text(C1, 1)
    clock.now += 20.0
    [close] = e.retry_due()
    assert isinstance(close, Close) and isinstance(close.error, AckTimeoutError)


def test_an_acknowledgement_resets_the_retries() -> None:
    clock = Clock()
    e = engine(clock)
    log = {C1: 2}
    carry_out(e, e.start([position(C1, 2)]), log)
    clock.now += 1.0
    carry_out(e, e.acked(C1, 1), log)
    clock.now += 4.5
    assert e.retry_due() == [ArmRetry(5.0)]  # progress 4.5 s ago: not yet
    clock.now += 1.0
    assert pushed(carry_out(e, e.retry_due(), log)) == [text(C1, 2)]


def test_a_retry_with_everything_acknowledged_does_nothing() -> None:
    e = engine(Clock())
    log = {C1: 1}
    carry_out(e, e.start([position(C1, 1)]), log)
    carry_out(e, e.acked(C1, 1), log)
    assert e.retry_due() == []


@pytest.mark.parametrize("kind", ["ack", "read"])
def test_a_cursor_beyond_the_last_known_seq_is_refused_until_the_database_says_it_exists(kind: str) -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 1, delivered=1)]), {C1: 1})
    move = e.acked if kind == "ack" else e.read
    assert e.needs_last_seq(C1, 1_000_000)
    with pytest.raises(CursorBeyondLastSeqError) as refused:
        move(C1, 1_000_000)
    assert refused.value.extra == {"conversation_id": str(C1), "last_seq": 1}
    e.learn_last_seq(C1, 3)
    assert RecordCursor(C1, **{"delivered_seq" if kind == "ack" else "read_seq": 3}) in move(C1, 3)


def test_a_cursor_that_does_not_move_records_nothing_and_other_conversations_are_not_found() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 5, delivered=4, read=3)]), {C1: 5})
    assert e.acked(C1, 4) == []
    assert e.read(C1, 2) == []
    with pytest.raises(ConversationNotFoundError):
        e.acked(C2, 1)


def test_a_cursor_stored_beyond_the_log_does_not_hide_later_messages() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 1, delivered=1_000_000)]), {C1: 1})
    assert pushed(e.live(C1, [(2, "", text(C1, 2))], stored_at=0.0)) == [text(C1, 2)]


def test_acknowledging_live_pushes_reports_their_delivery_latency() -> None:
    clock = Clock()
    e = engine(clock)
    carry_out(e, e.start([position(C1, 0)]), {})
    e.live(C1, [(1, "", text(C1, 1)), (2, "", text(C1, 2))], stored_at=clock.now)
    clock.now += 0.25
    assert e.acked(C1, 2)[0] == ObserveLatency((0.25, 0.25))


def test_leaving_a_conversation_frees_its_share_of_the_window() -> None:
    e = engine(Clock(), window=2)
    carry_out(e, e.start([position(C1, 2), position(C2, 1)]), {C1: 2, C2: 1})
    assert e.room() == 0
    assert pushed(carry_out(e, e.left(C1), {C2: 1})) == [text(C2, 1)]
    assert e.room() == 1 and e.followed() == [C2]


def test_a_joined_conversation_is_read_from_the_database_whatever_its_announced_last_seq() -> None:
    e = engine(Clock())
    carry_out(e, e.start([]), {})
    assert pushed(carry_out(e, e.joined(C1, 0), {C1: 2})) == [text(C1, 1), text(C1, 2)]
    assert e.joined(C1, 0) == []


def test_the_sweeper_finding_newer_messages_pumps_them() -> None:
    e = engine(Clock())
    carry_out(e, e.start([position(C1, 1, delivered=1)]), {C1: 1})
    assert pushed(carry_out(e, e.swept({C1: 3}), {C1: 3})) == [text(C1, 2), text(C1, 3)]
    assert e.swept({C1: 3}) == []


def test_typing_starts_are_relayed_at_most_once_a_second_and_every_stop_is() -> None:
    clock = Clock()
    e = engine(clock)
    e.start([position(C1, 0)])
    assert e.typing_relayed(C1, started=True)
    clock.now += 0.5
    assert not e.typing_relayed(C1, started=True)
    assert e.typing_relayed(C1, started=False)
    assert e.typing_relayed(C1, started=True)
