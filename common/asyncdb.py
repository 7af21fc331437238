"""Database calls from async code (the realtime gateway) without per-call connection churn.

Channels' `database_sync_to_async` closes "old" connections before and after every call, and its
consumers do it once more (another thread hop) before every handler. With CONN_MAX_AGE = 0 that
means a pool check-out and check-in per call: at realtime rates, more work than the queries.
`db_call` runs the function in the one thread-sensitive worker thread (or, for the write path,
in one dedicated writer thread) and leaves its connection open for the next call; a call that
failed closes it.

A connection kept open goes stale when PostgreSQL restarts: the first call on it fails with a
connection error although the server is back. Such a call is run once more on a fresh connection
(see `_stale`), so a restart costs no realtime request an `internal_error`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

P = ParamSpec("P")
T = TypeVar("T")


# The realtime write path (send batches, cursor flushes) has a thread and a connection of its own,
# so a batch never waits behind catch-up reads queued on the shared thread.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realtime-writer")


def db_call(function: Callable[P, T], *, writer: bool = False) -> Callable[P, Awaitable[T]]:
    @functools.wraps(function)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        kept = connection.connection is not None and not connection.in_atomic_block
        try:
            return function(*args, **kwargs)
        except Exception as error:
            connection.close_if_unusable_or_obsolete()
            if not (kept and _stale(error)):
                raise
        # Once more, on a new connection. Safe because every function run here may run twice:
        # reads; cursor moves, which never go backwards; send batches, idempotent on
        # (sender device, client_message_id), so a batch that did commit (the connection died
        # at COMMIT) is answered as a resend. A new connection that fails is a real outage: no
        # second retry.
        connection.close()
        return function(*args, **kwargs)

    if writer:
        return sync_to_async(guarded, thread_sensitive=False, executor=_WRITER)
    return sync_to_async(guarded, thread_sensitive=True)


def _stale(error: Exception) -> bool:
    """A connection error (the server closed the connection, or it is gone), not a failed query:
    what a connection kept across a PostgreSQL restart raises on its first use."""
    return isinstance(error, OperationalError | InterfaceError) and not connection.is_usable()
