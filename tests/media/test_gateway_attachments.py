"""Attachments over the WebSocket `send` frame (protocol.md 6.2): the same rules as REST, through
the realtime batcher of a live daphne."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.models import Conversation
from media.models import MediaBlob, MediaReference
from tests.builders import Dev, envelope_json, make_conversation, make_dev
from tests.messaging.wsclient import Socket

pytestmark = pytest.mark.django_db(transaction=True)


def _blob(dev: Dev) -> MediaBlob:
    return MediaBlob.objects.create(
        uploader=dev.user, uploader_device=dev.device, length=100, state=MediaBlob.State.COMPLETE
    )


def _frame(dev: Dev, conversation: Conversation, frame_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "send", "id": frame_id, "conversation_id": str(conversation.pk), "envelope": body}


def test_send_frame_with_attachments_records_references_once(daphne_url: str) -> None:
    alice, bob = make_dev(), make_dev()
    conversation = make_conversation(alice, bob.user)
    mine, theirs = _blob(alice), _blob(bob)
    socket = Socket.open(daphne_url, alice.token)

    body = envelope_json(alice, attachments=[str(mine.id)])
    socket.send(_frame(alice, conversation, "a", body))
    assert socket.expect("sent", id="a")["created"] is True
    socket.send(_frame(alice, conversation, "b", body))  # the outbox resending after a reconnect
    assert socket.expect("sent", id="b")["created"] is False
    socket.send(_frame(alice, conversation, "c", envelope_json(alice, attachments=[str(theirs.id)])))
    error = socket.expect("error", id="c")
    assert error["code"] == "media_not_found"
    socket.close()

    assert list(MediaReference.objects.values_list("blob_id", "conversation_id")) == [(mine.id, conversation.pk)]
