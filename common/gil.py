"""The thread switch interval of ASGI server processes.

A daphne process runs its event loop (every WebSocket frame, every Redis publish) on one thread and
the database work on others. Each socket call on the loop releases the GIL; getting it back from a
thread that is busy building and running SQL takes up to `sys.getswitchinterval()`, 5 ms by default.
With hundreds of socket calls a second the loop spends most of its time waiting in that convoy, and
latency grows long before the CPU is busy. A shorter interval costs a few more thread switches and
measured an order of magnitude off the realtime p50 and p99 at 200 msg/s (README, Performance).
"""

from __future__ import annotations

import sys

from django.conf import settings


def switch_interval_apply() -> float:
    """Apply `E2EE_GIL_SWITCH_INTERVAL_MS` (0: leave Python's default); return the interval in s."""
    milliseconds = float(settings.E2EE_GIL_SWITCH_INTERVAL_MS)
    if milliseconds > 0:
        sys.setswitchinterval(milliseconds / 1000)
    return sys.getswitchinterval()
