from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from common import realtime
from common.realtime import device_group, publish_on_commit, publish_to_groups_on_commit
from common.testing import PublishedEvent


def test_device_group_is_a_valid_channel_layer_group_name() -> None:
    device_id = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")
    assert device_group(device_id) == "device.6f1c0a0e4c1e4a8e9d550b7b8c0f1e2a"
    # The naming rule is the channel-layer specification's, the same for every layer.
    assert InMemoryChannelLayer().require_valid_group_name(device_group(device_id))


@pytest.mark.django_db
def test_publish_waits_for_commit(published: list[PublishedEvent], django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        publish_on_commit("device.abc", {"type": "test.event", "n": 1})
        assert published == []
    assert published == [PublishedEvent("device.abc", {"type": "test.event", "n": 1})]


@pytest.mark.django_db
def test_publish_sends_nothing_when_the_transaction_rolls_back(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            publish_to_groups_on_commit(["device.a", "device.b"], {"type": "test.event"})
            1 / 0  # noqa: B018
    assert callbacks == []
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_published_event_reaches_a_channel_in_the_group() -> None:
    layer = get_channel_layer()
    group = device_group(uuid.uuid4())

    def commit_and_publish() -> None:
        with transaction.atomic():
            publish_on_commit(group, {"type": "test.event", "n": 7})

    async def scenario() -> dict[str, Any]:
        # One event loop for the listener (the pub/sub layer's channels live in their loop); the
        # publish runs in a worker thread, as a request's would, and reaches it through the layer.
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            await sync_to_async(commit_and_publish)()
            return dict(await asyncio.wait_for(layer.receive(channel), timeout=5))
        finally:
            await layer.group_discard(group, channel)

    assert async_to_sync(scenario)() == {"type": "test.event", "n": 7}


@pytest.mark.django_db
def test_publish_with_no_listener_is_harmless(django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        publish_on_commit(device_group(uuid.uuid4()), {"type": "test.event"})


def test_a_failing_channel_layer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenLayer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            raise ConnectionError("redis is down")

    with mock.patch.object(realtime, "get_channel_layer", return_value=BrokenLayer()):
        with caplog.at_level(logging.ERROR, logger="common.realtime"):
            realtime._deliver(["device.a"], {"type": "conversation.messages", "envelope": {"ciphertext": "SECRET=="}})
    [record] = caplog.records
    assert record.getMessage() == "realtime publish failed"
    assert record.fields == {"event_type": "conversation.messages", "groups": 1}  # type: ignore[attr-defined]
    assert "SECRET" not in caplog.text
