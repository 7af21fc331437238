"""The fault suite's fixtures: one stack (PostgreSQL, Redis, two daphne, a worker) and one proxy per
module, and three accounts with two devices each made through the proxy with the SDK."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.session import Session
from harness.provision import device_link, user_register
from tests.fault.proxy import FailoverProxy
from tests.fault.services import Stack, missing_binaries


@dataclass
class Cluster:
    stack: Stack
    proxy: FailoverProxy


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # It restarts servers and takes minutes: only when asked for (CI runs it once, on its own).
    if "fault" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the fault suite runs with -m fault")
    missing = missing_binaries()
    if missing:
        pytest.skip(f"the fault suite needs {', '.join(missing)}")
    # The servers' logs outlive the run: in E2EE_FAULT_LOGS if set, else in pytest's temporary
    # directory (which other pytest runs of the same user rotate away).
    wanted = os.environ.get("E2EE_FAULT_LOGS")
    logs = Path(wanted) if wanted else tmp_path_factory.mktemp("fault-logs")
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(logs_to=logs)
    proxy: FailoverProxy | None = None
    http_log = logging.getLogger("httpx")
    http_level = http_log.level
    http_log.setLevel(logging.WARNING)  # the SDK's every request, in the fixtures' captured log
    try:
        stack.start()
        proxy = FailoverProxy([("127.0.0.1", server.port) for server in stack.daphnes])
        proxy.start()
        yield Cluster(stack, proxy)
    finally:
        http_log.setLevel(http_level)
        print(f"\nthe fault suite's server logs: {logs}")
        if proxy is not None:
            proxy.close()
        stack.close()


@pytest.fixture(scope="module")
def accounts(cluster: Cluster) -> Iterator[list[Session]]:
    """Three people with two devices each (the second linked by the first), through the proxy."""
    url = cluster.proxy.url
    sessions: list[Session] = []
    try:
        for name in ("ann", "ben", "cat"):
            first = user_register(url, name)
            sessions += [first, device_link(first, url, device_name="device 2")]
        yield sessions
    finally:
        for session in sessions:
            session.transport.close()  # type: ignore[attr-defined]
