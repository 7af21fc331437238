"""Live daphne processes serving the test database: the only way to test WebSockets for real.

Loaded as a pytest plugin by the root conftest.py, so its fixtures are available everywhere.

pytest-django's `live_server` is a WSGI thread and cannot speak WebSocket, so realtime tests run
`config.asgi:application` in daphne subprocesses, exactly as production does. They share the
test database (SQLite file or PostgreSQL test database) with the test process and, when
`REDIS_URL` is set, one Redis: two such processes then work as one service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from harness.server import DaphneServer


def test_database_url() -> str:
    """A DATABASE_URL for the database this test process is using right now (the test DB)."""
    settings = connection.settings_dict
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{settings['NAME']}"


def multi_process_possible() -> bool:
    """Several processes make one service only through a shared channel layer (Redis)."""
    return bool(os.environ.get("REDIS_URL"))


@pytest.fixture
def daphne_factory(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., DaphneServer]]:
    """Start daphne processes on the test database; `extra_env` overrides settings per process.

    Every process is stopped at teardown, before the database is flushed.
    """
    servers: list[DaphneServer] = []
    # One test's servers share rate-limit counters; other tests' counters in the same Redis do
    # not count against them.
    prefix = f"rl-test-{uuid.uuid4().hex}"

    def _start(*, extra_env: dict[str, str] | None = None, port: int = 0) -> DaphneServer:
        index = len(servers)
        server = DaphneServer(
            database_url=test_database_url(),
            log_path=tmp_path / f"daphne-{index}.log",
            port=port,
            # Production behaviour, rate limits included (the benchmark's default turns them off).
            extra_env={"E2EE_RATE_LIMIT_ENABLED": "1", "E2EE_RATE_LIMIT_PREFIX": prefix, **(extra_env or {})},
        )
        server.start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture
def daphne_url(daphne_factory: Callable[..., DaphneServer]) -> str:
    """One live daphne process; its http:// base URL (the WebSocket is ws://<same>/ws/v1/)."""
    return daphne_factory().url
