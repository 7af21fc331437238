"""The WebSocket transport: the URL it derives, the hello/welcome handshake, and the typed errors
that drive the reconnect policy (stop on 4401/4403, reconnect on anything else)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from client.errors import RealtimeAuthError, RealtimeDisconnectedError
from client.frames import CLOSE_ACK_TIMEOUT, CLOSE_FRAME_TOO_LARGE, Pong, Welcome
from client.transport.websocket import connect, websocket_url

DEVICE = "0f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2b"
WELCOME = {"type": "welcome", "v": 1, "device_id": DEVICE, "username": "alice", "heartbeat_s": 30}

Handler = Callable[[ServerConnection], Awaitable[None]]


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/v1/"),
        ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000/ws/v1/"),
        ("https://chat.example/prefix/", "wss://chat.example/prefix/ws/v1/"),
        ("wss://chat.example", "wss://chat.example/ws/v1/"),
    ],
)
def test_websocket_url_follows_the_server_url(server: str, expected: str) -> None:
    assert websocket_url(server) == expected


@pytest.mark.parametrize("server", ["ftp://x", "127.0.0.1:8000", "http://"])
def test_websocket_url_refuses_what_is_not_a_server_url(server: str) -> None:
    with pytest.raises(ValueError):
        websocket_url(server)


async def with_server(handler: Handler, body: Callable[[str], Awaitable[None]], *, subprotocol: bool = True) -> None:
    subprotocols = [Subprotocol("e2ee.v1")] if subprotocol else None
    async with serve(handler, "127.0.0.1", 0, subprotocols=subprotocols) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        await body(f"http://127.0.0.1:{port}")


def test_connect_sends_hello_first_and_returns_after_welcome() -> None:
    seen: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append(ws.request.path if ws.request else None)
        seen.append(json.loads(await ws.recv()))
        await ws.send(json.dumps(WELCOME))
        ping = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "pong", "id": ping["id"]}))
        await ws.wait_closed()

    async def body(url: str) -> None:
        conn = await connect(url, "the-token")
        assert conn.welcome == Welcome(conn.welcome.device_id, "alice", 30)
        await conn.send({"type": "ping", "id": "q1"})
        frames = conn.frames()
        assert await anext(frames) == Pong("q1")
        await conn.close()

    run(with_server(handler, body))
    assert seen == ["/ws/v1/", {"type": "hello", "v": 1, "token": "the-token"}]


@pytest.mark.parametrize(("code", "error"), [(4401, "invalid_token"), (4403, "device_not_active")])
def test_an_auth_close_is_an_auth_error(code: int, error: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps({"type": "error", "code": error, "message": "refused"}))
        await ws.close(code)

    async def body(url: str) -> None:
        with pytest.raises(RealtimeAuthError) as caught:
            await connect(url, "t")
        assert (caught.value.close_code, caught.value.error_code) == (code, error)

    run(with_server(handler, body))


@pytest.mark.parametrize("code", [1011, 1012, 4408])
def test_other_closes_before_welcome_mean_reconnect(code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(code)

    async def body(url: str) -> None:
        with pytest.raises(RealtimeDisconnectedError) as caught:
            await connect(url, "t")
        assert caught.value.close_code == code

    run(with_server(handler, body))


def test_a_close_after_welcome_ends_the_frames_with_a_typed_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps(WELCOME))
        await ws.send("not json")  # skipped, not fatal
        await ws.send(json.dumps({"type": "pong", "id": "x"}))
        await ws.close(1012)

    async def body(url: str) -> None:
        conn = await connect(url, "t")
        received = []
        with pytest.raises(RealtimeDisconnectedError) as caught:
            async for frame in conn.frames():
                received.append(frame)
        assert received == [Pong("x")]
        assert caught.value.close_code == 1012

    run(with_server(handler, body))


@pytest.mark.parametrize(
    ("code", "error"), [(CLOSE_FRAME_TOO_LARGE, "frame_too_large"), (CLOSE_ACK_TIMEOUT, "ack_timeout")]
)
def test_the_gateways_own_closes_after_welcome_mean_reconnect(code: int, error: str) -> None:
    # protocol.md 6.2: 4413 frame too large, 4420 acknowledgements stopped; the SDK said 1009 and
    # knew no 4420.
    assert (CLOSE_FRAME_TOO_LARGE, CLOSE_ACK_TIMEOUT) == (4413, 4420)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps(WELCOME))
        await ws.send(json.dumps({"type": "error", "code": error, "message": "closing"}))
        await ws.close(code)

    async def body(url: str) -> None:
        conn = await connect(url, "t")
        with pytest.raises(RealtimeDisconnectedError) as caught:
            async for _ in conn.frames():
                pass
        assert caught.value.close_code == code

    run(with_server(handler, body))


def test_a_server_that_does_not_select_the_subprotocol_is_refused() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def body(url: str) -> None:
        with pytest.raises(RealtimeDisconnectedError):
            await connect(url, "t")

    run(with_server(handler, body, subprotocol=False))


def test_no_welcome_in_time_is_a_disconnect() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def body(url: str) -> None:
        with pytest.raises(RealtimeDisconnectedError):
            await connect(url, "t", hello_timeout=0.2)

    run(with_server(handler, body))


def test_nobody_listening_is_a_disconnect() -> None:
    async def body() -> None:
        async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(RealtimeDisconnectedError):
            await connect(f"http://127.0.0.1:{port}", "t", open_timeout=2)

    run(body())
