"""The safety net under the doorbell: find conversations whose newest messages were never rung.

A live push can be lost without anyone noticing: Redis restarts between a commit and its
publish, or a receiving process's subscription is down for a moment. A later message of the
conversation would reveal the gap, but the last message before a quiet period would wait until
the device reconnects. So every `E2EE_WS_SWEEP_S` each server process reads the newest seq of
every conversation its connections follow (one query for all of them, by primary key; nothing
that grows with history) and has each connection that is still behind what was committed one
interval earlier pump from the database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import Protocol

from django.conf import settings

from common.asyncdb import db_call
from conversations.selectors import conversation_last_seqs

logger = logging.getLogger(__name__)


class Sweepable(Protocol):
    def followed_conversations(self) -> list[uuid.UUID]: ...

    async def catch_up_to(self, last_seqs: dict[uuid.UUID, int]) -> None: ...


class Sweeper:
    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Sweepable] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._previous: dict[uuid.UUID, int] = {}

    def register(self, connection: Sweepable) -> None:
        self._connections.add(connection)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unregister(self, connection: Sweepable) -> None:
        self._connections.discard(connection)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self._connections:
            await asyncio.sleep(settings.E2EE_WS_SWEEP_S)
            try:
                await self.sweep()
            except Exception:  # the database is down: try again next round
                logger.exception("realtime sweep failed")

    async def sweep(self) -> None:
        connections = list(self._connections)
        followed = {pk for connection in connections for pk in connection.followed_conversations()}
        if not followed:
            return
        last_seqs = await db_call(conversation_last_seqs)(conversation_ids=followed)
        # Only what was committed a whole interval ago counts as lost: a push that is merely
        # queued behind others (a busy process) is on its way, and reading it from the database
        # for every connection would add load exactly when the process is short of it.
        settled = {pk: min(seq, self._previous.get(pk, 0)) for pk, seq in last_seqs.items()}
        self._previous = last_seqs
        for connection in connections:
            await connection.catch_up_to(settled)
