"""Once PostgreSQL is back after a restart, a realtime send succeeds at the first try (issue 13).

The gateway keeps one database connection per thread across calls (common/asyncdb.py); after a
restart (`-m immediate`, as a crash and a supervisor would) that connection is dead, and before
the fix the first send of each daphne process failed with `internal_error` on it, up to 17 s
after PostgreSQL was back (the SDK sends it again after a pause).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.realtime import RealtimeClient
from client.store.messages import MessageStore
from harness.provision import user_register
from harness.server import DaphneServer
from tests.integration.own_services import (
    PostgresServer,
    postgres_missing,
    running_migrated_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing()))]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_migrated_postgres() as server:
        yield server


@pytest.fixture
def server(postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaphneServer]:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("E2EE_CELERY_BROKER_URL", raising=False)
    with DaphneServer(database_url=postgres.database_url("e2ee"), log_path=tmp_path / "daphne.log") as s:
        yield s


def test_the_first_realtime_send_after_a_postgresql_restart_is_stored_at_once(
    postgres: PostgresServer, server: DaphneServer, tmp_path: Path
) -> None:
    ann, ben = user_register(server.url, "ann"), user_register(server.url, "ben")
    cid = ann.create_conversation([ben.username], kind="group").conversation_id
    ann.conversation_for_send(cid)

    async def scenario() -> tuple[int, int]:
        client = RealtimeClient(ann, MessageStore.open_in(tmp_path))
        await client.start()
        await client.wait_connected(20)
        before = await (await client.send_text(cid, "before")).wait(20)  # the writer's connection is open
        await asyncio.sleep(0.5)  # its acknowledgement written too: nothing else writes meanwhile
        await asyncio.to_thread(postgres.restart_immediate)
        frames_before = client.send_frames
        after = await (await client.send_text(cid, "after")).wait(30)
        frames = client.send_frames - frames_before
        await client.close()
        return after - before, frames

    step, frames = asyncio.run(scenario())
    assert step == 1
    assert frames == 1, f"the send needed {frames} frames: refused at first (internal_error)"
