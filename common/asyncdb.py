"""Database calls from async code (the realtime gateway) without per-call connection churn.

Channels' `database_sync_to_async` closes "old" connections before and after every call, and its
consumers do it once more (another thread hop) before every handler. With CONN_MAX_AGE = 0 that
means a pool check-out and check-in per call: at realtime rates, more work than the queries.
`db_call` runs the function in the one thread-sensitive worker thread (or, for the write path,
in one dedicated writer thread) and leaves its connection open for the next call; only a call
that failed closes it (a broken connection is then replaced on the next call, e.g. after a
PostgreSQL restart).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
T = TypeVar("T")


# The realtime write path (send batches, cursor flushes) has a thread and a connection of its own,
# so a batch never waits behind catch-up reads queued on the shared thread.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realtime-writer")


def db_call(function: Callable[P, T], *, writer: bool = False) -> Callable[P, Awaitable[T]]:
    @functools.wraps(function)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except Exception:
            connection.close_if_unusable_or_obsolete()
            raise

    if writer:
        return sync_to_async(guarded, thread_sensitive=False, executor=_WRITER)
    return sync_to_async(guarded, thread_sensitive=True)
