"""Per-event-loop singletons for the realtime gateway's process-wide helpers.

The send batcher, the cursor writer, the sweeper and the presence registry each exist once per
server process, but they hold asyncio objects bound to the loop that made them; a process runs one
loop under daphne, tests run several one after the other. `PerLoop` makes one object per running
loop and forgets the previous loop's.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        # A weak reference, not id(loop): a closed loop's id is reused by the next loop made at
        # the same address, which then got the old loop's object (and its dead asyncio state).
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._value: T | None = None

    def get(self) -> T:
        """The object of the running event loop, made on first use in that loop."""
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is None or self._loop() is not loop:
            self._loop, self._value = weakref.ref(loop), self._factory()
        return self._value

    def current(self) -> T | None:
        """The object of the running event loop if one was made there, without making one."""
        loop = asyncio.get_running_loop()
        return self._value if self._loop is not None and self._loop() is loop else None
