"""Typed payloads of the realtime events this app publishes (to `device.<uuid hex>` groups)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from messaging.models import Message
from messaging.serializers import EnvelopeSerializer


class MessageNewEvent(TypedDict):
    """A message was stored; carries the envelope inline so a connected device needs no fetch.
    Channels dispatches `type` "message.new" to a consumer's `message_new` handler."""

    type: Literal["message.new"]
    envelope: dict[str, Any]  # the Envelope object, exactly as the API returns it


def message_new_event(message: Message) -> MessageNewEvent:
    return {"type": "message.new", "envelope": dict(EnvelopeSerializer(message).data)}
