"""The cursor writer (messaging/cursors.py): one write per interval, receipts paced over it."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings

from common.asyncdb import db_call
from common.realtime import conversation_group
from messaging.cursors import CursorWriter
from messaging.models import DeliveryCursor
from tests.builders import make_conversation, make_dev

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_the_writer_threads_connection() -> Iterator[None]:
    """The writer thread keeps its connection between calls (common/asyncdb.py): close it, or
    PostgreSQL refuses to drop the test database at the end of the session."""
    yield
    asyncio.run(db_call(_close, writer=True)())


def _close() -> None:
    connection.close()  # looked up in the calling thread: that thread's own connection


async def _listen(groups: list[str], expected: int, timeout: float) -> list[tuple[float, dict[str, Any]]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    got: list[tuple[float, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expected:
                event = await layer.receive(channel)
                got.append((time.monotonic(), event))
    finally:
        for group in groups:
            await layer.group_discard(group, channel)
    return got


def test_a_flush_stores_every_move_at_once_and_spreads_the_receipts() -> None:
    reader = make_dev()
    conversations = [make_conversation(make_dev(), reader.user) for _ in range(8)]

    async def scenario() -> tuple[float, list[tuple[float, dict[str, Any]]]]:
        writer = CursorWriter()
        listener = asyncio.create_task(
            _listen([conversation_group(c.id) for c in conversations], expected=8, timeout=10)
        )
        await asyncio.sleep(0.2)  # subscribed
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
        return started, await listener

    started, got = asyncio.run(scenario())
    assert DeliveryCursor.objects.filter(device=reader.device).count() == 8
    assert {(c.delivered_seq, c.read_seq) for c in DeliveryCursor.objects.filter(device=reader.device)} == {(3, 2)}
    assert sorted(uuid.UUID(event["conversation_id"]) for _, event in got) == sorted(c.id for c in conversations)
    offsets = sorted(at - started for at, _ in got)
    assert offsets[0] < 0.3
    assert offsets[-1] > 0.45, offsets  # spread over the 0.6 s, not one burst
    assert all(b - a < 0.3 for a, b in itertools.pairwise(offsets)), offsets


@override_settings(E2EE_RECEIPT_FLUSH_MS=300)
def test_moves_keep_being_flushed_every_interval_while_they_come() -> None:
    reader = make_dev()
    conversation = make_conversation(make_dev(), reader.user)

    async def scenario() -> list[tuple[float, dict[str, Any]]]:
        writer = CursorWriter()
        listener = asyncio.create_task(_listen([conversation_group(conversation.id)], expected=3, timeout=10))
        await asyncio.sleep(0.2)
        for seq in (1, 2, 3):
            writer.record(
                device_id=reader.device.pk,
                username=reader.user.username,
                conversation_id=conversation.id,
                delivered_seq=seq,
            )
            await asyncio.sleep(0.35)
        return await listener

    got = asyncio.run(scenario())
    assert [json.loads(event["frame"])["receipts"][0]["delivered_seq"] for _, event in got] == [1, 2, 3]
    assert DeliveryCursor.objects.get(device=reader.device, conversation=conversation).delivered_seq == 3
