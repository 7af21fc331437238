"""Waiting for something to become true: poll with a deadline, never a fixed sleep.

One implementation for the tests and the benchmarks, in the shapes they need: a bool, for a caller
that reports the failure itself (`holds_within`, `holds_within_async`), or a `TimeoutError` naming
what was awaited (`wait_for`, `wait_until`); each blocking or in a coroutine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def holds_within(condition: Callable[[], bool], *, timeout: float, interval: float = 0.02) -> bool:
    """Check `condition` every `interval` s until it holds or `timeout` s have passed; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(interval)
    return True


def wait_for(
    condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "the condition", interval: float = 0.02
) -> float:
    """Block until `condition()` holds; seconds waited. TimeoutError names `what`."""
    started = time.monotonic()
    if not holds_within(condition, timeout=timeout, interval=interval):
        raise TimeoutError(f"not within {timeout:g} s: {what}")
    return time.monotonic() - started


async def holds_within_async(predicate: Callable[[], bool], *, timeout: float, poll_s: float = 0.01) -> bool:
    """`holds_within` in a coroutine: the event loop runs between checks."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        await asyncio.sleep(poll_s)
    return True


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "the condition", poll_s: float = 0.01
) -> float:
    """Await until `predicate()` holds (checked every `poll_s`); seconds waited. TimeoutError names `what`."""
    started = time.monotonic()
    if not await holds_within_async(predicate, timeout=timeout, poll_s=poll_s):
        raise TimeoutError(f"not within {timeout:g} s: {what}")
    return time.monotonic() - started
