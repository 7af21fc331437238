"""The gateway's per-process objects (messaging/runtime.py): one owner per event loop, and one
`stop()` that loses nothing they hold."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from common.asyncdb import db_call
from conversations.models import Conversation
from harness.server import DaphneServer
from messaging.batching import StoredBatch
from messaging.errors import SendInternalError
from messaging.models import DeliveryCursor
from messaging.runtime import GatewayRuntime, gateway_runtime
from messaging.services import SendRequest
from tests.builders import make_conversation, make_dev
from tests.messaging.test_gateway import rest_send
from tests.messaging.wsclient import Socket


def test_one_runtime_per_event_loop() -> None:
    async def twice() -> tuple[GatewayRuntime, GatewayRuntime]:
        return gateway_runtime(), gateway_runtime()

    first, again = asyncio.run(twice())
    later, _ = asyncio.run(twice())
    assert first is again
    assert later is not first and later.send_batcher is not first.send_batcher


@pytest.fixture
def _writer_connection_closed() -> Iterator[None]:
    """The writer thread keeps its connection: close it, or PostgreSQL cannot drop the test DB."""
    yield

    def close_here() -> None:
        connection.close()  # looked up in the calling thread: that thread's own connection

    async def close() -> None:
        await db_call(close_here, writer=True)()

    asyncio.run(close())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_writer_connection_closed")
def test_stop_answers_queued_sends_writes_pending_cursor_moves_and_ends_the_sweeper() -> None:
    reader = make_dev()
    conversation = make_conversation(make_dev(), reader.user)
    Conversation.objects.update(last_seq=4)

    async def slow_store(requests: list[SendRequest]) -> StoredBatch:
        await asyncio.sleep(0.2)
        return StoredBatch(results=[SendInternalError() for _ in requests], events=[])

    async def scenario() -> tuple[bool, bool]:
        runtime = gateway_runtime()
        runtime.send_batcher._store = slow_store
        future = runtime.send_batcher.submit(SendRequest(reader.device, reader.device.pk, None))  # type: ignore[arg-type]
        runtime.cursor_writer.record(
            device_id=reader.device.pk, username=reader.user.username, conversation_id=conversation.id, delivered_seq=4
        )

        class Idle:
            def followed_conversations(self) -> list[uuid.UUID]:
                return []

            async def catch_up_to(self, last_seqs: dict[uuid.UUID, int]) -> None:
                return None

        idle = Idle()
        runtime.sweeper.register(idle)
        await runtime.stop()
        return future.done(), runtime.sweeper._task is None

    answered, sweeper_ended = asyncio.run(scenario())
    assert answered and sweeper_ended
    assert DeliveryCursor.objects.get(device=reader.device, conversation=conversation).delivered_seq == 4


@pytest.mark.django_db(transaction=True)
def test_an_acknowledgement_taken_just_before_a_shutdown_is_stored(
    daphne_factory: Callable[..., DaphneServer],
) -> None:
    alice, bob = make_dev(), make_dev()
    conversation = make_conversation(alice, bob.user)
    # Cursor moves would wait a minute to be written: only the shutdown can write this one.
    server = daphne_factory(extra_env={"E2EE_RECEIPT_FLUSH_MS": "60000"})
    rest_send(server.url, alice, conversation, 2)
    bobs = Socket.open(server.url, bob.token)
    bobs.messages(2)
    bobs.send({"type": "ack", "conversation_id": str(conversation.id), "seq": 2})
    bobs.send({"type": "ping", "id": "after-ack"})
    bobs.expect("pong")  # the ack was handled: it is in the writer, not yet in the database
    assert not DeliveryCursor.objects.filter(device=bob.device, delivered_seq=2).exists()
    server.stop()  # SIGTERM, as systemd stops it
    assert DeliveryCursor.objects.get(device=bob.device, conversation=conversation).delivered_seq == 2
    assert "Traceback" not in server.log_path.read_text()
