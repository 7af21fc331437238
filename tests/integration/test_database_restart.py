"""Once PostgreSQL is back after a restart, no request fails (issue 13, F8).

A PostgreSQL of the test's own (its own port and data directory, restarted with `-m immediate`,
as a crash and a supervisor would) behind a real daphne process. Before the fix every connection
idling in the pool was dead after the restart, and each failed the next request that took it:
8 x 500 and 11 x 503 out of 40 requests in the fault run, and one log-in 7 minutes later.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness.server import DaphneServer
from tests.integration.own_services import (
    PostgresServer,
    postgres_missing,
    running_migrated_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing()))]

REQUESTS = 40
CONCURRENCY = 8
# Both read the database: the public directory (a 404 for an unknown name is an answer from
# the database) and the readiness check (SELECT 1; 503 when it fails).
PATHS = ("/api/v1/users/nobody_here", "/health/ready")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_migrated_postgres() as server:
        yield server


@pytest.fixture
def server(postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaphneServer]:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("E2EE_CELERY_BROKER_URL", raising=False)
    # A pool that keeps several connections idle: each was a failed request after a restart.
    env = {"E2EE_DB_POOL_MIN": "4", "E2EE_DB_POOL_MAX": "8"}
    with DaphneServer(database_url=postgres.database_url("e2ee"), log_path=tmp_path / "daphne.log", extra_env=env) as s:
        yield s


def _statuses(url: str) -> list[int]:
    def one(index: int) -> int:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            return client.get(PATHS[index % len(PATHS)]).status_code

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as threads:
        return list(threads.map(one, range(REQUESTS)))


def test_no_request_fails_once_postgresql_is_back_after_a_restart(
    postgres: PostgresServer, server: DaphneServer
) -> None:
    assert all(status < 500 for status in _statuses(server.url))  # the pool holds open connections

    postgres.restart_immediate()  # returns once the server accepts connections again
    statuses = _statuses(server.url)

    failures = [status for status in statuses if status >= 500]
    assert failures == [], f"{len(failures)} of {REQUESTS} requests failed after the restart: {failures}"
