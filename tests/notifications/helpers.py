"""Shared steps of the notifications tests."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from django.conf import settings

from conversations.models import Conversation
from devices import presence
from notifications import services
from tests.builders import Dev, envelope_json


def webhook_register(dev: Dev, url: str) -> str:
    """Register a webhook target for the device through the API; its secret."""
    response = dev.client().put("/api/v1/devices/me/push-target", {"kind": "webhook", "url": url}, format="json")
    assert response.status_code == 200, response.content
    return str(response.json()["secret"])


def send(dev: Dev, conversation: Conversation) -> dict[str, Any]:
    """A REST send, then the window buffer flushed (eager: fan-out and deliveries done)."""
    response = dev.client().post(f"/api/v1/conversations/{conversation.pk}/messages", envelope_json(dev), format="json")
    assert response.status_code == 201, response.content
    services.window_buffer.flush()
    return dict(response.json())


def signature_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What protocol.md 4.6 tells a receiver to do."""
    timestamp = headers["x-e2ee-timestamp"]
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-e2ee-signature"]) and abs(time.time() - int(timestamp)) < 300


def mark_connected(dev: Dev) -> None:
    """Record a live connection of the device where the gateway would (Redis or this process)."""
    member = presence.presence_connection(dev.device.pk, "test.channel")
    expiry = time.time() + 60
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        client.zadd(f"e2ee:presence:{dev.user.pk}", {member: expiry})
        client.close()
    else:
        presence._memory_connections[member] = expiry


def mark_disconnected(dev: Dev) -> None:
    member = presence.presence_connection(dev.device.pk, "test.channel")
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        client.zrem(f"e2ee:presence:{dev.user.pk}", member)
        client.close()
    else:
        presence._memory_connections.pop(member, None)
