"""Key request endpoints (protocol.md 4.8)."""

from __future__ import annotations

import os
import uuid

import pytest

from conversations.models import Conversation, WrappedKey
from tests.accounts.factories import UserFactory
from tests.builders import Dev, b64, make_conversation, make_dev

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Dev:
    return make_dev(user=UserFactory.create(username="alice"))


@pytest.fixture
def alice2(alice: Dev) -> Dev:
    return make_dev(user=alice.user)


@pytest.fixture
def conversation(alice: Dev, alice2: Dev) -> Conversation:
    bob = make_dev(user=UserFactory.create(username="bob"))
    conversation = make_conversation(alice, bob.user)
    WrappedKey.objects.filter(recipient_device=alice2.device).delete()
    return conversation


def _file(dev: Dev, conversation_id: uuid.UUID, epoch: object = 1) -> tuple[int, dict[str, object]]:
    response = dev.client().post(
        f"/api/v1/conversations/{conversation_id}/key-requests", {"epoch": epoch}, format="json"
    )
    return response.status_code, response.json()


def test_file_answers_201_then_200_with_the_same_request(conversation: Conversation, alice2: Dev) -> None:
    first_status, first = _file(alice2, conversation.pk)
    again_status, again = _file(alice2, conversation.pk)

    assert (first_status, again_status) == (201, 200)
    assert first == again
    assert set(first) == {"request_id", "conversation_id", "epoch", "username", "device_id", "status", "created_at"}
    assert (first["epoch"], first["username"], first["device_id"], first["status"]) == (
        1,
        "alice",
        str(alice2.device.pk),
        "open",
    )


def test_file_refuses_unknown_epoch_conversation_and_bad_body(conversation: Conversation, alice2: Dev) -> None:
    assert _file(alice2, conversation.pk, epoch=9)[1]["code"] == "epoch_not_found"
    assert _file(alice2, uuid.uuid4())[1]["code"] == "conversation_not_found"
    status, body = _file(alice2, conversation.pk, epoch="1")
    assert (status, body["code"]) == (400, "invalid_request")


def test_list_then_answer_serves_the_request(conversation: Conversation, alice: Dev, alice2: Dev) -> None:
    _, filed = _file(alice2, conversation.pk)

    listed = alice.client().get("/api/v1/key-requests").json()["key_requests"]
    answer = alice.client().post(
        f"/api/v1/key-requests/{filed['request_id']}/answer",
        {"wrapped_key": b64(os.urandom(80)), "signature": b64(os.urandom(64))},
        format="json",
    )

    assert [r["request_id"] for r in listed] == [filed["request_id"]]
    assert (answer.status_code, answer.json()) == (200, {"stored": True})
    assert alice.client().get("/api/v1/key-requests").json() == {"key_requests": []}
    assert _file(alice2, conversation.pk)[1]["status"] == "served"
    keys = alice2.client().get(f"/api/v1/conversations/{conversation.pk}/keys").json()["keys"]
    assert [(k["epoch"], k["wrapped_by_device_id"]) for k in keys] == [(1, str(alice.device.pk))]


def test_answer_to_unknown_request_is_404(alice: Dev) -> None:
    response = alice.client().post(
        f"/api/v1/key-requests/{uuid.uuid4()}/answer",
        {"wrapped_key": b64(os.urandom(80)), "signature": b64(os.urandom(64))},
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (404, "key_request_not_found")


def test_refusing_the_held_key_drops_only_that_key_and_reopens_the_request(
    conversation: Conversation, alice: Dev, alice2: Dev
) -> None:
    """A garbage answer no longer wins for good: the requester refuses it and asks again."""
    _, filed = _file(alice2, conversation.pk)
    alice.client().post(
        f"/api/v1/key-requests/{filed['request_id']}/answer",
        {"wrapped_key": b64(bytes(80)), "signature": b64(bytes(64))},
        format="json",
    )
    others = set(WrappedKey.objects.exclude(recipient_device=alice2.device).values_list("pk", flat=True))

    response = alice2.client().post(
        f"/api/v1/conversations/{conversation.pk}/key-requests", {"epoch": 1, "refuse_held": True}, format="json"
    )

    assert (response.status_code, response.json()["status"]) == (200, "open")
    assert response.json()["request_id"] == filed["request_id"]
    assert not WrappedKey.objects.filter(recipient_device=alice2.device).exists()
    assert set(WrappedKey.objects.exclude(recipient_device=alice2.device).values_list("pk", flat=True)) == others
    listed = alice.client().get("/api/v1/key-requests").json()["key_requests"]
    assert [r["request_id"] for r in listed] == [filed["request_id"]]  # answerable again
    again = alice.client().post(
        f"/api/v1/key-requests/{filed['request_id']}/answer",
        {"wrapped_key": b64(os.urandom(80)), "signature": b64(os.urandom(64))},
        format="json",
    )
    assert again.json() == {"stored": True}


def test_refuse_held_must_be_a_boolean(conversation: Conversation, alice2: Dev) -> None:
    response = alice2.client().post(
        f"/api/v1/conversations/{conversation.pk}/key-requests", {"epoch": 1, "refuse_held": "maybe"}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
