"""Test helpers shared by the suite (imported only from tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from django.db import connection

from common import realtime

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@contextmanager
def forbid_writes() -> Iterator[None]:
    """Fail any INSERT/UPDATE/DELETE run inside the block: selectors never write."""

    def guard(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(_WRITE_VERBS):
            raise AssertionError(f"write inside a read-only block: {sql[:120]}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(guard):
        yield


@dataclass(frozen=True)
class PublishedEvent:
    group: str
    event: dict[str, Any]


@contextmanager
def capture_published_events() -> Iterator[list[PublishedEvent]]:
    """Record what `common.realtime` delivers (after commit) instead of sending it.

    Delivery happens when the on_commit callbacks run: for real in `transaction=True` tests, and
    inside pytest-django's `django_capture_on_commit_callbacks(execute=True)` otherwise.
    """
    published: list[PublishedEvent] = []

    def record(groups: list[str], event: dict[str, Any]) -> None:
        published.extend(PublishedEvent(group, event) for group in groups)

    with mock.patch.object(realtime, "_deliver", record):
        yield published
