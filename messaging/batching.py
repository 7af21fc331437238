"""Group commit for sends arriving over WebSockets: one transaction for many messages.

Every server process has one `SendBatcher`. Consumers hand it parsed sends and await the answer.
While a batch is in the database, the sends that arrive meanwhile queue up and become the next
batch, so at low load a send is written at once (a batch of one) and under load the cost of a
transaction, its lock round trips and its commit is shared by everything that arrived during the
previous one. Fan-out of a committed batch is published while the next batch is being written,
in commit order (a later batch's publish waits for the earlier one's).

Sender order (protocol.md 6.3): each connection's sends carry its `SendGate`. Once one of them is
refused for a transient reason (the batch failed, the device's send limit), the connection's sends
still queued are refused the same way and so is every later one, until the refused message is sent
again: nothing a device queued behind a refused message can be stored before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.asyncdb import db_call
from common.errors import ApiError
from common.metrics import messages_sent_inc
from common.ratelimit import RateLimitedError, ratelimit_hits
from messaging.errors import SendInternalError, SendsInFlightTooManyError
from messaging.publisher import GroupEvent, messages_events, messages_publish
from messaging.services import EnvelopeSendResult, SendBatchOutcome, SendRequest, envelope_send_batch

logger = logging.getLogger(__name__)

MAX_BATCH = 256

SendAnswer = EnvelopeSendResult | ApiError
# Refusals after which the client sends the message again (client/realtime.py does, after a pause).
TRANSIENT_SEND_ERRORS = (SendInternalError, RateLimitedError, SendsInFlightTooManyError)


class SendGate:
    """One connection's send order. Every send gets a ticket, in arrival order (`admit`). After a
    transient refusal of a send, every send with a later ticket is refused with that refusal
    until the refused message (its client_message_id) comes again; the client sends it again
    first and the rest in queue order. A stored message behind the refused one cannot be undone,
    so none may get through. The earliest refused send is the one waited for: sends ahead of it
    (an earlier ticket, still queued) are handled as usual, and if one of them is refused in turn,
    it becomes the one waited for."""

    def __init__(self) -> None:
        self._tickets = 0
        self._blocked: tuple[int, bytes, ApiError] | None = None  # ticket, client_message_id, refusal

    def admit(self, client_message_id: bytes) -> tuple[int, ApiError | None]:
        """The send's ticket, and None: submit it; or the refusal to answer it with (unstored)."""
        self._tickets += 1
        if self._blocked is not None and client_message_id == self._blocked[1]:
            self._blocked = None  # the refused message again: the gate opens from here on
        return self._tickets, self.holds(self._tickets)

    def holds(self, ticket: int) -> ApiError | None:
        """The refusal a send with this ticket gets (it is behind the refused one), or None."""
        if self._blocked is None or ticket <= self._blocked[0]:
            return None
        return self._blocked[2]

    def refused(self, ticket: int, client_message_id: bytes, error: ApiError) -> None:
        """A send of this connection was refused; a transient refusal closes the gate behind it."""
        if not isinstance(error, TRANSIENT_SEND_ERRORS):
            return
        if self._blocked is None or ticket <= self._blocked[0]:
            self._blocked = (ticket, client_message_id, error)


_Queued = tuple[SendRequest, "asyncio.Future[SendAnswer]", SendGate | None, int]


class SendBatcher:
    def __init__(
        self,
        store: Callable[[list[SendRequest]], Awaitable[StoredBatch]] | None = None,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._store = store or _store_in_database
        self._max_batch = max_batch
        self._queue: list[_Queued] = []
        self._draining = False
        self._last_publish: asyncio.Task[None] | None = None

    def submit(self, request: SendRequest, gate: SendGate | None = None) -> asyncio.Future[SendAnswer]:
        """Queue a send (synchronously: sends submitted in order are sequenced in order), or
        answer it at once if its connection's `gate` is closed."""
        future: asyncio.Future[SendAnswer] = asyncio.get_running_loop().create_future()
        ticket, refusal = gate.admit(request.content.client_message_id) if gate is not None else (0, None)
        if refusal is not None:
            future.set_result(refusal)
            return future
        self._queue.append((request, future, gate, ticket))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return future

    async def idle(self) -> None:
        """Wait until every send submitted so far is answered and its fan-out published."""
        while self._draining or self._queue:
            await asyncio.sleep(0.01)
        if self._last_publish is not None:
            await asyncio.shield(self._last_publish)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                try:
                    outcome = await self._store([request for request, _, _, _ in batch])
                except Exception:  # the database is down or a bug: answer, never hang the senders
                    logger.exception("send batch failed", extra={"fields": {"batch": len(batch)}})
                    self._answer(batch, [SendInternalError()] * len(batch))
                    continue
                self._last_publish = asyncio.get_running_loop().create_task(
                    _publish_after(self._last_publish, outcome.events)
                )
                self._answer(batch, outcome.results)
        finally:
            self._draining = False

    def _answer(self, batch: list[_Queued], results: list[SendAnswer]) -> None:
        """Answer a batch; a transient refusal closes its connection's gate, and the connection's
        sends still queued (submitted before it closed) are refused with it, unstored."""
        closed = False
        for (request, future, gate, ticket), result in zip(batch, results, strict=True):
            if gate is not None and isinstance(result, TRANSIENT_SEND_ERRORS):
                gate.refused(ticket, request.content.client_message_id, result)
                closed = True
            if not future.done():  # the sender may have gone (cancelled)
                future.set_result(result)
        if not closed:
            return
        kept: list[_Queued] = []
        for queued in self._queue:
            request, future, gate, ticket = queued
            refusal = gate.holds(ticket) if gate is not None else None
            if refusal is None:
                kept.append(queued)
            elif not future.done():
                future.set_result(refusal)
        self._queue = kept


@dataclass(frozen=True)
class StoredBatch:
    """A batch's answers, and its fan-out rendered (in the database thread) for the publisher."""

    results: list[SendAnswer]
    events: list[GroupEvent]


def _limit_and_store(requests: list[SendRequest]) -> StoredBatch:
    """The per-device send limit (one Redis round trip for the whole batch), then the batch,
    then its frames rendered, off the event loop."""
    waits = ratelimit_hits("send_device", [request.device.pk for request in requests])
    allowed = [request for request, wait in zip(requests, waits, strict=True) if wait is None]
    outcome = envelope_send_batch(allowed) if allowed else SendBatchOutcome(results=[])
    stored = iter(outcome.results)
    results: list[SendAnswer] = [next(stored) if wait is None else RateLimitedError(wait) for wait in waits]
    if outcome.stored:
        messages_sent_inc(len(outcome.stored), transport="websocket")
    return StoredBatch(results=results, events=messages_events(outcome.stored))


async def _store_in_database(requests: list[SendRequest]) -> StoredBatch:
    batch: StoredBatch = await db_call(_limit_and_store, writer=True)(requests)
    return batch


async def _publish_after(previous: asyncio.Task[None] | None, events: list[GroupEvent]) -> None:
    if previous is not None:
        await asyncio.shield(previous)
    await messages_publish(events)
