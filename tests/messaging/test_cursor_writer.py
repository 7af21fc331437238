"""The cursor writer (messaging/cursors.py): one write per interval, receipts paced over it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings

from common.asyncdb import db_call
from common.realtime import conversation_group
from conversations.models import Conversation
from messaging.cursors import CursorWriter
from messaging.models import DeliveryCursor
from tests.builders import make_conversation, make_dev

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_the_writer_threads_connection() -> Iterator[None]:
    """The writer thread keeps its connection between calls (common/asyncdb.py): close it, or
    PostgreSQL refuses to drop the test database at the end of the session."""
    yield
    asyncio.run(_close_in_the_writer_thread())


async def _close_in_the_writer_thread() -> None:
    await db_call(_close, writer=True)()


def _close() -> None:
    connection.close()  # looked up in the calling thread: that thread's own connection


class Listener:
    """A channel in `groups` of the real channel layer, recording (arrival time, event)."""

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups
        self.layer = get_channel_layer()
        self.channel = ""

    async def __aenter__(self) -> Listener:
        # Subscribed on return: what is published from now on reaches the channel (no sleep).
        self.channel = await self.layer.new_channel()
        for group in self.groups:
            await self.layer.group_add(group, self.channel)
        # One round trip through the channel: the layer's receiving side is running (Redis starts
        # it on the first receive), so the first receipt is not timed late by that start.
        await self.layer.send(self.channel, {"type": "probe"})
        await self.layer.receive(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for group in self.groups:
            await self.layer.group_discard(group, self.channel)

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, event) for the events received until `done(events so far)`."""
        got: list[tuple[float, dict[str, Any]]] = []
        async with asyncio.timeout(timeout):
            while not done([event for _, event in got]):
                event = await self.layer.receive(self.channel)
                got.append((time.monotonic(), event))
        return got


def _delivered(event: dict[str, Any]) -> int:
    return int(json.loads(event["frame"])["receipts"][0]["delivered_seq"])


def test_a_flush_stores_every_move_at_once_and_spreads_the_receipts() -> None:
    reader = make_dev()
    conversations = [make_conversation(make_dev(), reader.user) for _ in range(8)]
    Conversation.objects.update(last_seq=3)  # cursors never pass the last message

    async def scenario() -> tuple[float, list[tuple[float, dict[str, Any]]]]:
        writer = CursorWriter()
        async with Listener([conversation_group(c.id) for c in conversations]) as listener:
            received = asyncio.create_task(listener.until(lambda events: len(events) == 8, timeout=10))
            for conversation in conversations:
                writer.record(
                    device_id=reader.device.pk,
                    username=reader.user.username,
                    conversation_id=conversation.id,
                    delivered_seq=3,
                    read_seq=2,
                )
            started = time.monotonic()
            await writer.flush(spread_s=0.6)
            return started, await received

    started, got = asyncio.run(scenario())
    assert DeliveryCursor.objects.filter(device=reader.device).count() == 8
    assert {(c.delivered_seq, c.read_seq) for c in DeliveryCursor.objects.filter(device=reader.device)} == {(3, 2)}
    assert sorted(uuid.UUID(event["conversation_id"]) for _, event in got) == sorted(c.id for c in conversations)
    offsets = sorted(at - started for at, _ in got)
    # Spread over the 0.6 s (the 8th is due at 7/8 of it), not one burst. Scheduling delays can
    # only push publishes later, so these bounds do not depend on the machine's speed.
    assert offsets[-1] - offsets[0] > 0.45, offsets
    assert offsets[0] < 0.45, offsets  # the first one is not held back by the spreading


@override_settings(E2EE_RECEIPT_FLUSH_MS=300)
def test_moves_recorded_while_a_flush_runs_are_flushed_too() -> None:
    reader = make_dev()
    conversation = make_conversation(make_dev(), reader.user)
    Conversation.objects.update(last_seq=3)  # cursors never pass the last message

    async def scenario() -> list[tuple[float, dict[str, Any]]]:
        writer = CursorWriter()
        async with Listener([conversation_group(conversation.id)]) as listener:
            received = asyncio.create_task(listener.until(lambda events: 3 in map(_delivered, events), timeout=10))
            for seq in (1, 2, 3):  # each lands while the previous interval's flush loop is running
                writer.record(
                    device_id=reader.device.pk,
                    username=reader.user.username,
                    conversation_id=conversation.id,
                    delivered_seq=seq,
                )
                await asyncio.sleep(0.2)
            return await received

    seen = [_delivered(event) for _, event in asyncio.run(scenario())]
    assert seen[-1] == 3 and seen == sorted(set(seen)), seen  # nothing stranded, never backwards
    assert DeliveryCursor.objects.get(device=reader.device, conversation=conversation).delivered_seq == 3
