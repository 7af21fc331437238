"""The realtime gateway's per-process objects, owned by one `GatewayRuntime`, made together and
stopped together.

A server process has one of each: the send batcher (group commit), the cursor writer (batched
acknowledgements and receipts), the sweeper (pushes that never came), the presence registry,
and, shared with the REST side, the notification window buffer and the database writer thread.
The first four hold asyncio objects bound to the loop that made them: `gateway_runtime()` makes
one runtime per running loop (one per process under daphne; tests run several loops one after
the other). `stop()` is the one place they are stopped: the cursor moves not yet written are
written, the sends queued are answered, the sweeper ends and the buffered wake-ups are handed
on. config/daphne_protocol.py calls it when daphne shuts down.
"""

from __future__ import annotations

import asyncio
import logging

from common.loops import PerLoop
from devices.presence import PresenceRegistry, presence_registry
from messaging.batching import SendBatcher
from messaging.cursors import CursorWriter
from messaging.sweeper import Sweeper

logger = logging.getLogger(__name__)


class GatewayRuntime:
    def __init__(self) -> None:
        self.send_batcher = SendBatcher()
        self.cursor_writer = CursorWriter()
        self.sweeper = Sweeper()
        # The registry lives in devices/presence.py (REST reads presence too); this loop's one.
        self.presence: PresenceRegistry = presence_registry()

    async def stop(self) -> None:
        """Stop everything this process runs for the gateway, losing nothing it holds: sends
        queued are stored and answered, cursor moves written, buffered wake-ups handed on."""
        from notifications.services import window_buffer  # notifications imports messaging

        await self.send_batcher.idle()
        self.sweeper.stop()
        await self.cursor_writer.flush()
        await asyncio.to_thread(window_buffer.flush)


_runtime: PerLoop[GatewayRuntime] = PerLoop(GatewayRuntime)


def gateway_runtime() -> GatewayRuntime:
    """The runtime of the running event loop (one per process under daphne)."""
    return _runtime.get()


async def gateway_runtime_stop() -> None:
    """Stop the running loop's runtime, if the process ever made one (served a connection)."""
    runtime = _runtime.current()
    if runtime is not None:
        try:
            await runtime.stop()
        except Exception:  # shutting down: log it, let the process end
            logger.exception("gateway runtime stop failed")
