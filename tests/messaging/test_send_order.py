"""Sender order through a transient send failure (protocol.md 6.3, issue 13): the messages one
device sends on a connection are stored in the order it sent them, even when one of them is
refused for a transient reason while those behind it are already on the wire."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection

from common.asyncdb import db_call
from common.ratelimit import RateLimitedError
from config.asgi import application
from conversations.models import Conversation
from messaging import batching
from messaging.batching import SendGate, StoredBatch
from messaging.errors import EnvelopeStaleEpochError, SendInternalError
from messaging.models import Message
from messaging.services import SendRequest
from tests.builders import Dev, envelope_json, make_conversation, make_dev

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def _writer_connection_closed() -> Iterator[None]:
    """The writer thread keeps its connection: close it, or PostgreSQL cannot drop the test DB."""
    yield

    def close_here() -> None:
        connection.close()

    async def close() -> None:
        await db_call(close_here, writer=True)()

    asyncio.run(close())


def _frame(sender: Dev, conversation: Conversation, name: str) -> dict[str, Any]:
    # The message's name in its id and in its client_message_id (16 bytes, base64).
    cmid = name.encode().ljust(16, b".")
    envelope = envelope_json(sender, client_message_id=base64.b64encode(cmid).decode())
    return {"type": "send", "id": name, "conversation_id": str(conversation.id), "envelope": envelope}


def _stored_order(conversation: Conversation) -> list[str]:
    rows = Message.objects.filter(conversation=conversation).order_by("seq")
    return [bytes(row.client_message_id).rstrip(b".").decode() for row in rows]


@pytest.mark.usefixtures("_writer_connection_closed")
def test_sends_behind_a_failed_batch_are_refused_until_it_is_sent_again_and_stored_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first batch (m1 alone) fails as with Redis down; m2 and m3, already sent behind it on
    the same connection, must not be stored before m1: they are refused the same way, and so is
    m4 sent later, until m1 comes again. The client then sends m1..m4 again in order."""
    sender = make_dev()
    conversation = make_conversation(sender, make_dev().user)
    real_store = batching._store_in_database
    calls = 0

    async def store_failing_once(requests: list[SendRequest]) -> StoredBatch:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.3)  # m2 and m3 arrive and queue meanwhile
            raise ConnectionError("Redis is down")
        return await real_store(requests)

    monkeypatch.setattr(batching, "_store_in_database", store_failing_once)

    async def scenario() -> dict[str, str]:
        communicator = WebsocketCommunicator(application, "/ws/v1/", subprotocols=["e2ee.v1"])
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_json_to({"type": "hello", "v": 1, "token": sender.token})
        answers: dict[str, str] = {}

        async def collect(count: int) -> None:
            while len(answers) < count:
                frame = await communicator.receive_json_from(timeout=10)
                if frame["type"] in ("sent", "error") and frame.get("id"):
                    answers[frame["id"]] = frame["type"] if frame["type"] == "sent" else frame["code"]

        for name in ("m1", "m2", "m3"):
            await communicator.send_json_to(_frame(sender, conversation, name))
        await collect(3)
        await communicator.send_json_to(_frame(sender, conversation, "m4"))
        await collect(4)
        first_answers = dict(answers)
        # What the SDK does after its pause: every refused message again, in queue order.
        answers.clear()
        for name in ("m1", "m2", "m3", "m4"):
            if first_answers[name] != "sent":
                await communicator.send_json_to(_frame(sender, conversation, name))
        await collect(sum(1 for a in first_answers.values() if a != "sent"))
        await communicator.disconnect()
        return first_answers

    first_answers = asyncio.run(scenario())
    assert first_answers["m1"] == "internal_error"
    assert _stored_order(conversation) == ["m1", "m2", "m3", "m4"]


def test_a_closed_gate_refuses_everything_behind_the_refused_message_until_it_comes_again() -> None:
    gate = SendGate()
    ticket, refusal = gate.admit(b"m1")
    assert refusal is None
    error = SendInternalError()
    gate.refused(ticket, b"m1", error)
    assert gate.admit(b"m2")[1] is error
    assert gate.admit(b"m1")[1] is None  # sent again: the gate opens
    assert gate.admit(b"m2")[1] is None


def test_an_earlier_send_refused_later_becomes_the_one_waited_for() -> None:
    """m1 is still queued when m2 is refused (the frame limit), then m1's batch fails: the client
    sends m1 again first, and that must open the gate, not be refused for waiting on m2."""
    gate = SendGate()
    first, _ = gate.admit(b"m1")
    second, _ = gate.admit(b"m2")
    gate.refused(second, b"m2", RateLimitedError(1))
    assert gate.holds(first) is None  # ahead of the refused one: stored as usual
    gate.refused(first, b"m1", SendInternalError())
    assert gate.admit(b"m1")[1] is None
    assert gate.admit(b"m2")[1] is None


def test_a_refusal_for_good_does_not_close_the_gate() -> None:
    gate = SendGate()
    ticket, _ = gate.admit(b"m1")
    gate.refused(ticket, b"m1", EnvelopeStaleEpochError(2))
    assert gate.admit(b"m2")[1] is None
