"""Publish realtime events to channel-layer groups once the current transaction commits.

Pushes are an optimisation: the message log read by sequence number is the source of truth, so a
push that fails is logged and dropped, never turned into a failed request. Registering through
`transaction.on_commit` means a rolled-back write publishes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from common.metrics import FANOUT_LATENCY

logger = logging.getLogger(__name__)


def device_group(device_id: uuid.UUID) -> str:
    """The group every connection of one device joins (channel-layer names are ASCII, < 100)."""
    return f"device.{device_id.hex}"


def conversation_group(conversation_id: uuid.UUID) -> str:
    """The group every connection of every member device of the conversation joins: one
    publish reaches them all, whichever server process holds their sockets."""
    return f"conv.{conversation_id.hex}"


def publish_on_commit(group: str, event: Mapping[str, Any]) -> None:
    """Send `event` (with a `type` such as "conversation.messages") to `group` after commit."""
    publish_to_groups_on_commit([group], event)


def publish_to_groups_on_commit(groups: Iterable[str], event: Mapping[str, Any]) -> None:
    """Like `publish_on_commit` for many groups, with a single event-loop hop for all of them."""
    group_list = list(groups)
    if group_list:
        transaction.on_commit(partial(_deliver, group_list, dict(event)))


async def group_send_all(groups: list[str], event: dict[str, Any]) -> None:
    """Publish now, from async code that has already committed (the realtime send batcher)."""
    await _group_send_all(groups, event)


async def _group_send_all(groups: list[str], event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:  # CHANNEL_LAYERS not configured: nobody can be listening.
        return
    for group in groups:
        await layer.group_send(group, event)


def _deliver(groups: list[str], event: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        async_to_sync(_group_send_all)(groups, event)
        FANOUT_LATENCY.observe(time.perf_counter() - started)
    except Exception:  # any layer failure (Redis down, full channel) must not fail the request
        # Log the event type and fan-out only: the event carries ciphertext.
        logger.exception(
            "realtime publish failed",
            extra={"fields": {"event_type": event.get("type"), "groups": len(groups)}},
        )
