"""Live daphne processes serving the test database: the only way to test WebSockets for real.

Loaded as a pytest plugin by the root conftest.py, so its fixtures are available everywhere.

pytest-django's `live_server` is a WSGI thread and cannot speak WebSocket, so realtime tests run
`config.asgi:application` in daphne subprocesses, exactly as production does. They share the
test database (SQLite file or PostgreSQL test database) with the test process and, when
`REDIS_URL` is set, one Redis: two such processes then work as one service.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


# A shared server serves many tests, all from 127.0.0.1: the limits keyed by address would count
# every test's registrations, log-ins and link approvals together, so they are lifted there. The
# limits keyed by account or device stay as in production (each test has fresh accounts), and the
# tests of the address limits start their own server (`daphne_factory`).
SHARED_SERVER_LIMITS = "register_ip=100000/3600,login_ip=100000/60,link_code_ip=100000/600"


def _rate_limited_env(prefix: str, extra_env: dict[str, str] | None) -> dict[str, str]:
    # Production behaviour, rate limits included (the benchmark's default turns them off).
    return {"E2EE_RATE_LIMIT_ENABLED": "1", "E2EE_RATE_LIMIT_PREFIX": prefix, **(extra_env or {})}


@pytest.fixture
def daphne_factory(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., DaphneServer]]:
    """Start daphne processes of this test alone on the test database; `extra_env` overrides
    settings per process. For tests that stop, kill or restart a server, change its settings, or
    read its process-wide state (metrics); others use the shared `daphne_url`.

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
            extra_env=_rate_limited_env(prefix, extra_env),
        )
        server.start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


class SharedDaphne:
    """The daphne process a module's tests share, and what keeps it fit to share.

    Between two tests the database is flushed under the running process. What the process still
    holds of the test that ended must not outlive the flush: cursor moves not yet written would
    then refer to deleted devices, and the cursor writer keeps failed moves for its next write, so
    every later receipt would fail with them. `settle` gives pending moves one write interval to
    land; should one still fail, `check` (at the next test) sees it in the log and restarts.
    """

    # Receipts are written every 100 ms here, instead of every second, so that settling is short.
    RECEIPT_FLUSH_MS = 100
    POISONED = b"cursor flush failed"

    def __init__(self, log_path: Path) -> None:
        self.server = DaphneServer(
            database_url=test_database_url(),
            log_path=log_path,
            extra_env=_rate_limited_env(
                f"rl-test-{uuid.uuid4().hex}",
                {"E2EE_RATE_LIMITS": SHARED_SERVER_LIMITS, "E2EE_RECEIPT_FLUSH_MS": str(self.RECEIPT_FLUSH_MS)},
            ),
        )
        self.log_path = log_path
        self._log_offset = 0
        self.restarts = 0

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def settle(self) -> None:
        time.sleep(3 * self.RECEIPT_FLUSH_MS / 1000)

    def check(self) -> None:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            new = log.read()
        self._log_offset += len(new)
        if self.POISONED in new:
            self.server.restart()
            self.restarts += 1


@pytest.fixture(scope="module")
def shared_daphne(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedDaphne]:
    """One daphne process for the tests of a module: starting one costs seconds, a test's body
    usually a fraction of one. Its tests make fresh accounts, so they do not see each other's
    data; the database is flushed after each of them while the process keeps running."""
    with django_db_blocker.unblock():
        shared = SharedDaphne(tmp_path_factory.mktemp("daphne") / "daphne-shared.log")
    shared.start()
    yield shared
    shared.stop()


@pytest.fixture
def daphne_url(shared_daphne: SharedDaphne, transactional_db: None) -> Iterator[str]:
    """The module's live daphne process; its http:// base URL (the WebSocket is ws://<same>/ws/v1/).
    The test's writes are committed (`transactional_db`), so the process sees them."""
    shared_daphne.check()
    yield shared_daphne.server.url
    shared_daphne.settle()  # before the database is flushed (this teardown runs first)


@pytest.fixture
def fresh_daphne_url(daphne_factory: Callable[..., DaphneServer]) -> str:
    """A daphne process of this test alone: for assertions on process-wide state (metrics)."""
    return daphne_factory().url
