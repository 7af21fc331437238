"""A blocking WebSocket test client speaking protocol.md section 6 (real socket, real daphne)."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol


class Socket:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    def open(cls, base_url: str, token: str | None = None, *, subprotocols: list[str] | None = None) -> Socket:
        url = base_url.replace("http://", "ws://") + "/ws/v1/"
        offered = [Subprotocol(p) for p in (subprotocols or ["e2ee.v1"])]
        connection = connect(url, subprotocols=offered, open_timeout=10, legacy=True)
        socket = cls(connection)
        if token is not None:
            socket.send({"type": "hello", "v": 1, "token": token})
            welcome = socket.expect("welcome")
            assert welcome["v"] == 1
        return socket

    def send(self, frame: dict[str, Any]) -> None:
        self.connection.send(json.dumps(frame))

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return dict(json.loads(self.connection.recv(timeout=timeout)))

    def expect(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next frame of this type (and members); earlier other frames are kept for later."""
        deadline = time.monotonic() + timeout
        for index, frame in enumerate(self.backlog):
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return self.backlog.pop(index)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} frame; got {[f['type'] for f in self.backlog]}")
            frame = dict(json.loads(self.connection.recv(timeout=remaining)))
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.backlog.append(frame)

    def messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [self.expect("message", timeout=timeout)["envelope"] for _ in range(count)]

    def silent(self, kind: str, seconds: float) -> bool:
        """True if no frame of this type arrives within `seconds`."""
        try:
            self.expect(kind, timeout=seconds)
        except TimeoutError:
            return True
        return False

    def closed_with(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.backlog.append(dict(json.loads(self.connection.recv(timeout=deadline - time.monotonic()))))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return None
        return None

    def close(self) -> None:
        self.connection.close()
