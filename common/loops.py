"""Per-event-loop singletons for the realtime gateway's process-wide helpers.

The send batcher, the cursor writer, the sweeper and the presence registry each exist once per
server process, but they hold asyncio objects bound to the loop that made them; a process runs one
loop under daphne, tests run several one after the other. `PerLoop` makes one object per running
loop and forgets the previous loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._loop_id: int | None = None
        self._value: T | None = None

    def get(self) -> T:
        """The object of the running event loop, made on first use in that loop."""
        loop_id = id(asyncio.get_running_loop())
        if self._value is None or loop_id != self._loop_id:
            self._loop_id, self._value = loop_id, self._factory()
        return self._value
