"""A small failover TCP proxy in front of the daphne processes, as a load balancer would be.

Clients (HTTP and WebSocket alike) connect to the proxy; each connection is piped to one healthy
backend, round robin. A backend is healthy while `GET /health/live` answers 200 within
`HEALTH_TIMEOUT_S` (checked every `HEALTH_EVERY_S`), so a killed process is skipped at once
(its connect is refused) and a stopped one (SIGSTOP: the kernel still accepts its connections)
within about a second. A backend's connections end with it: the client side is then reset, as a
load balancer does.

Two faults of its own, for the network between clients and servers:

* `drop()` resets every open connection (both sides), as a network failure or a proxy reload does;
* `stall(seconds)` stops every byte in both directions, on open and new connections, for that
  long, then lets the bytes held meanwhile through (a congested or flapping link).

It runs its own event loop in a thread, so the clients' loop being busy never slows the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.server import free_port

HEALTH_EVERY_S = 0.2
HEALTH_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 1.0

T = TypeVar("T")


@dataclass
class _Backend:
    host: str
    port: int
    healthy: bool = True


@dataclass(eq=False)  # kept in a set: identity, not value
class _Pipe:
    client: asyncio.StreamWriter
    backend: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.backend):
            if writer is not None:
                writer.transport.abort()


class FailoverProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._backends = [_Backend(host, port) for host, port in backends]
        self._next = 0
        self._pipes: set[_Pipe] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._health: asyncio.Task[None] | None = None
        self.connections = 0
        self.refused = 0  # connections with no backend to go to

    # -- lifecycle (called from the test's thread) -----------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    # -- faults (thread-safe; the asyncio variants for a caller on another loop) ----------------

    def drop(self) -> int:
        """Reset every open connection; how many there were."""
        return self._call(self._drop())

    def stall_begin(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def stall_end(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def healthy(self) -> list[bool]:
        return [b.healthy for b in self._backends]

    # -- inside the proxy's loop -----------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._health = asyncio.create_task(self._check_health())

    async def _close(self) -> None:
        if self._health is not None:
            self._health.cancel()
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        await self._drop()

    async def _drop(self) -> int:
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.reset()
            for task in pipe.tasks:
                task.cancel()
        self._pipes.clear()
        return len(pipes)

    def _candidates(self) -> list[_Backend]:
        """Healthy backends first, round robin; the others after them (health may lag a crash)."""
        count = len(self._backends)
        order = [self._backends[(self._next + i) % count] for i in range(count)]
        self._next = (self._next + 1) % count
        return [b for b in order if b.healthy] + [b for b in order if not b.healthy]

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pipe = _Pipe(client_writer)
        self._pipes.add(pipe)
        try:
            backend = await self._open_backend()
            if backend is None:
                self.refused += 1
                pipe.reset()
                return
            backend_reader, pipe.backend = backend
            if pipe not in self._pipes:  # dropped while connecting
                pipe.reset()
                return
            pipe.tasks = [
                asyncio.create_task(self._pump(client_reader, pipe.backend)),
                asyncio.create_task(self._pump(backend_reader, client_writer)),
            ]
            # Either direction ending ends the connection: a backend that died resets its clients.
            await asyncio.wait(pipe.tasks, return_when=asyncio.FIRST_COMPLETED)
            pipe.reset()
            for task in pipe.tasks:
                task.cancel()
        finally:
            self._pipes.discard(pipe)

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for backend in self._candidates():
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    return await asyncio.open_connection(backend.host, backend.port)
            except (OSError, TimeoutError):
                backend.healthy = False
        return None

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    async def _check_health(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(b) for b in self._backends))
            await asyncio.sleep(HEALTH_EVERY_S)

    async def _probe(self, backend: _Backend) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
                writer.write(b"GET /health/live HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                status = await reader.readline()
            backend.healthy = status.split(b" ")[1:2] == [b"200"]
        except (OSError, TimeoutError, IndexError):
            backend.healthy = False
        finally:
            if writer is not None:
                writer.transport.abort()
