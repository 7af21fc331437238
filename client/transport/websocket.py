"""WebSocket transport (docs/protocol.md §6): the SDK's only realtime I/O.

`connect` opens `ws(s)://<host>/ws/v1/` offering the subprotocol `e2ee.v1`, authenticates with a
`hello` frame (the token never goes in the URL or a header) and returns a `WebSocketConnection`
once the server answered `welcome`. The connection sends client frames and yields parsed server
frames. Failures are typed for the caller's reconnect policy:

* `RealtimeAuthError` (close 4401 / 4403): the token or device is refused; do not reconnect.
* `RealtimeDisconnectedError` (any other close: 1011, 1012, 4408, 4413, 4420, a network failure, a timeout):
  reconnect with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from client.errors import RealtimeAuthError, RealtimeDisconnectedError
from client.frames import (
    CLOSE_DEVICE_NOT_ACTIVE,
    CLOSE_INVALID_TOKEN,
    SUBPROTOCOL,
    WS_PATH,
    ErrorFrame,
    FrameError,
    ServerFrame,
    Welcome,
    decode_frame,
    encode_frame,
    hello_frame,
)

logger = logging.getLogger(__name__)

AUTH_CLOSE_CODES = frozenset({CLOSE_INVALID_TOKEN, CLOSE_DEVICE_NOT_ACTIVE})
MAX_SERVER_FRAME_BYTES = 1 << 20  # the server's frames carry at most one envelope (64 KiB ciphertext)


def websocket_url(server_url: str) -> str:
    """`http://host:port[/prefix]` -> `ws://host:port[/prefix]/ws/v1/` (https -> wss)."""
    parts = urlsplit(server_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) server URL: {server_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, "", ""))


class WebSocketConnection:
    """One authenticated connection. Not reusable: after it ends, `connect` again."""

    def __init__(self, socket: ClientConnection, welcome: Welcome) -> None:
        self._socket = socket
        self.welcome = welcome
        self._last_error: ErrorFrame | None = None

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            await self._socket.send(encode_frame(frame))
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None

    async def frames(self) -> AsyncIterator[ServerFrame]:
        """Yield server frames until the connection ends, then raise its typed error.

        A frame the SDK cannot parse is logged (type only) and skipped: the server pushes an
        unacknowledged message again, and one bad frame must not cut the connection.
        """
        while True:
            try:
                raw = await self._socket.recv()
            except ConnectionClosed as exc:
                raise self._closed_error(exc) from None
            try:
                frame = decode_frame(raw)
            except FrameError as exc:
                logger.warning("skipping a malformed server frame: %s", exc)
                continue
            if isinstance(frame, ErrorFrame) and frame.id is None:
                self._last_error = frame
            yield frame

    async def close(self) -> None:
        await self._socket.close()

    def _closed_error(self, exc: ConnectionClosed) -> RealtimeAuthError | RealtimeDisconnectedError:
        return _closed_error(exc, self._last_error)


def _closed_error(
    exc: ConnectionClosed, last_error: ErrorFrame | None
) -> RealtimeAuthError | RealtimeDisconnectedError:
    close = exc.rcvd
    code = close.code if close is not None else None
    if code in AUTH_CLOSE_CODES:
        error_code = last_error.code if last_error else "invalid_token"
        message = last_error.message if last_error else (close.reason if close else "")
        return RealtimeAuthError(code or 0, error_code, message)
    reason = f"{code} {close.reason}".strip() if close is not None else "no close frame"
    return RealtimeDisconnectedError(f"the connection closed ({reason})", close_code=code)


async def connect(
    server_url: str, token: str, *, open_timeout: float = 10.0, hello_timeout: float = 10.0
) -> WebSocketConnection:
    """Open, authenticate with `hello` and wait for `welcome`."""
    url = websocket_url(server_url)
    try:
        socket = await ws_connect(
            url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            open_timeout=open_timeout,
            max_size=MAX_SERVER_FRAME_BYTES,
            close_timeout=2.0,
        )
    except InvalidURI as exc:
        raise ValueError(str(exc)) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise RealtimeDisconnectedError(f"cannot open {url}: {exc}") from None
    try:
        if socket.subprotocol != SUBPROTOCOL:
            raise RealtimeDisconnectedError(f"{url} did not select the subprotocol {SUBPROTOCOL}")
        welcome = await _authenticate(socket, token, hello_timeout)
    except BaseException:
        await socket.close()  # cleanup only: the exception propagates unchanged
        raise
    return WebSocketConnection(socket, welcome)


async def _authenticate(socket: ClientConnection, token: str, timeout: float) -> Welcome:
    last_error: ErrorFrame | None = None
    try:
        async with asyncio.timeout(timeout):
            await socket.send(encode_frame(hello_frame(token)))
            while True:
                try:
                    frame = decode_frame(await socket.recv())
                except FrameError as exc:
                    raise RealtimeDisconnectedError(
                        f"the server answered hello with a malformed frame: {exc}"
                    ) from None
                if isinstance(frame, Welcome):
                    return frame
                if isinstance(frame, ErrorFrame):
                    last_error = frame
                # Anything else before welcome is out of order; keep waiting for welcome or close.
    except ConnectionClosed as exc:
        raise _closed_error(exc, last_error) from None
    except TimeoutError:
        raise RealtimeDisconnectedError("no welcome from the server in time") from None
