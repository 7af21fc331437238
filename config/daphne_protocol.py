"""daphne's WebSocket protocol with the gateway's frame-size limit applied as frames arrive.

daphne gives autobahn a limit of 1 MiB per message by default; a larger frame made autobahn drop
the TCP connection (no close frame: the client saw 1006) and a frame between the gateway's limit
and 1 MiB was buffered whole before the gateway refused it. Here autobahn's limits are the
gateway's (`E2EE_WS_MAX_FRAME_BYTES`, counted in bytes like the protocol says), so a frame is
refused from its header on, before any of it is buffered, and the refusal is the protocol's
(6.2): an `error` frame `frame_too_large` and a close with 4413, for a frame of any size.

Only daphne is covered: `daphne_protocol_install()` swaps the protocol class its factory builds
(a class attribute read when each connection is accepted); other ASGI servers apply their own
size limit first and the consumer's check after.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from twisted.internet.defer import Deferred

from messaging.errors import FrameTooLargeError
from messaging.runtime import gateway_runtime_stop
from messaging.wire import error_frame

# How long a connection refused for size may take to finish sending its frame and close.
CLOSE_HANDSHAKE_TIMEOUT_S = 15


class GatewayWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]  # daphne is untyped
    def _connectionMade(self) -> None:
        super()._connectionMade()
        limit = int(settings.E2EE_WS_MAX_FRAME_BYTES)
        self.maxMessagePayloadSize = self.maxFramePayloadSize = limit

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: Any) -> None:
        """autobahn's hook for a frame or message over the limit: answer and close instead of
        dropping the connection (the rest of the frame is read and discarded meanwhile)."""
        error = FrameTooLargeError(int(settings.E2EE_WS_MAX_FRAME_BYTES))
        self.sendMessage(error_frame(error).encode("ascii"), isBinary=False)
        self.failByDrop = False  # this connection only: a close frame, then the closing handshake
        # The client answers the close only once it has written its whole frame, which autobahn
        # reads and discards meanwhile; its default 1 s let a loaded server abort (a TCP reset)
        # before a 32 MiB frame was in, and the reset took the unread close frame with it.
        self.closeHandshakeTimeout = CLOSE_HANDSHAKE_TIMEOUT_S
        self._fail_connection(error.close_code, error.code)


def daphne_protocol_install() -> None:
    WebSocketFactory.protocol = GatewayWebSocketProtocol
    if "daphne.server" in sys.modules:
        # Served by daphne, whose asyncio reactor is installed by now (importing the reactor
        # anywhere else would install Twisted's default one): stop the gateway's per-process
        # objects in one place when it shuts down (messaging/runtime.py).
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", _runtime_stop)  # type: ignore[arg-type]  # zope interface typed without self


def _runtime_stop() -> Deferred[None]:
    return Deferred.fromFuture(asyncio.ensure_future(gateway_runtime_stop()))
