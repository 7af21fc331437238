"""Group commit for sends arriving over WebSockets: one transaction for many messages.

Every server process has one `SendBatcher`. Consumers hand it parsed sends and await the answer.
While a batch is in the database, the sends that arrive meanwhile queue up and become the next
batch, so at low load a send is written at once (a batch of one) and under load the cost of a
transaction, its lock round trips and its commit is shared by everything that arrived during the
previous one. Fan-out of a committed batch is published while the next batch is being written,
in commit order (a later batch's publish waits for the earlier one's).
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
from messaging.errors import SendInternalError
from messaging.publisher import GroupEvent, messages_events, messages_publish
from messaging.services import EnvelopeSendResult, SendBatchOutcome, SendRequest, envelope_send_batch

logger = logging.getLogger(__name__)

MAX_BATCH = 256

SendAnswer = EnvelopeSendResult | ApiError


class SendBatcher:
    def __init__(
        self,
        store: Callable[[list[SendRequest]], Awaitable[StoredBatch]] | None = None,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._store = store or _store_in_database
        self._max_batch = max_batch
        self._queue: list[tuple[SendRequest, asyncio.Future[SendAnswer]]] = []
        self._draining = False
        self._last_publish: asyncio.Task[None] | None = None

    def submit(self, request: SendRequest) -> asyncio.Future[SendAnswer]:
        """Queue a send (synchronously: sends submitted in order are sequenced in order)."""
        future: asyncio.Future[SendAnswer] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
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
                    outcome = await self._store([request for request, _ in batch])
                except Exception:  # the database is down or a bug: answer, never hang the senders
                    logger.exception("send batch failed", extra={"fields": {"batch": len(batch)}})
                    for _, future in batch:
                        if not future.done():
                            future.set_result(SendInternalError())
                    continue
                self._last_publish = asyncio.get_running_loop().create_task(
                    _publish_after(self._last_publish, outcome.events)
                )
                for (_, future), result in zip(batch, outcome.results, strict=True):
                    if not future.done():  # the sender may have gone (cancelled)
                        future.set_result(result)
        finally:
            self._draining = False


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
