from __future__ import annotations

import os
from typing import Any

import pytest
from django.test import override_settings

from conversations.models import Conversation
from messaging.models import Message
from tests.builders import Dev, b64, envelope_json

pytestmark = pytest.mark.django_db


def _url(conversation: Conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages"


def test_send_answers_201_with_the_envelope(alice: Dev, conversation: Conversation) -> None:
    body = envelope_json(alice)

    response = alice.client().post(_url(conversation), body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data == {
        **body,
        "seq": 1,
        "conversation_id": str(conversation.pk),
        "sender_username": alice.user.username,
        "created_at": data["created_at"],
    }


def test_identical_resend_answers_200_with_the_original(alice: Dev, conversation: Conversation) -> None:
    body = envelope_json(alice)
    first = alice.client().post(_url(conversation), body, format="json")
    again = alice.client().post(_url(conversation), body, format="json")
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Message.objects.count() == 1


@pytest.mark.parametrize("field", ["ciphertext", "device_lists"])
def test_resend_with_other_content_is_409(alice: Dev, conversation: Conversation, field: str) -> None:
    body = envelope_json(alice)
    alice.client().post(_url(conversation), body, format="json")
    response = alice.client().post(_url(conversation), {**body, field: b64(os.urandom(32))}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "client_message_id_reused")
    assert Message.objects.count() == 1


def test_stale_epoch_is_409_with_current_epoch(alice: Dev, conversation: Conversation) -> None:
    response = alice.client().post(_url(conversation), envelope_json(alice, epoch=2), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "stale_epoch")
    assert response.json()["extra"] == {"current_epoch": 1}


@override_settings(E2EE_MAX_CIPHERTEXT_BYTES=1024)
def test_oversize_ciphertext_is_413(alice: Dev, conversation: Conversation) -> None:
    response = alice.client().post(
        _url(conversation), envelope_json(alice, ciphertext=b64(os.urandom(1025))), format="json"
    )
    assert (response.status_code, response.json()["code"]) == (413, "envelope_too_large")
    assert response.json()["extra"] == {"max_bytes": 1024}
    assert not Message.objects.exists()


def test_default_limit_is_64_kib(alice: Dev, conversation: Conversation) -> None:
    at_limit = alice.client().post(
        _url(conversation), envelope_json(alice, ciphertext=b64(os.urandom(65536))), format="json"
    )
    assert at_limit.status_code == 201
    over = alice.client().post(
        _url(conversation), envelope_json(alice, ciphertext=b64(os.urandom(65537))), format="json"
    )
    assert over.status_code == 413


def test_sender_mismatch_is_400(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    response = alice.client().post(_url(conversation), envelope_json(bob), format="json")
    assert (response.status_code, response.json()["code"]) == (400, "sender_device_mismatch")


def test_wrong_version_is_400(alice: Dev, conversation: Conversation) -> None:
    response = alice.client().post(_url(conversation), envelope_json(alice, version=2), format="json")
    assert (response.status_code, response.json()["code"]) == (400, "unsupported_version")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_message_id", b64(os.urandom(15))),
        ("client_message_id", b64(os.urandom(16)).rstrip("=")),
        ("nonce", b64(os.urandom(13))),
        ("signature", b64(os.urandom(63))),
        ("ciphertext", b64(os.urandom(15))),  # shorter than the GCM tag
        ("ciphertext", b64(os.urandom(32)).replace("+", "-").replace("/", "_") + "-_"),
        ("ciphertext", 12345),
        ("nonce", None),
        ("epoch", "1"),
        ("epoch", 1.0),
        ("epoch", -1),
        ("epoch", 2**40),
        ("version", "1"),
        ("version", True),
        ("sender_device_id", "not-a-uuid"),
        ("sender_device_id", 7),
        ("device_lists", ""),
        ("device_lists", None),
        ("device_lists", b64(os.urandom(65_537))),  # more than the server stores
    ],
)
def test_malformed_envelope_is_invalid_request_and_nothing_stored(
    alice: Dev, conversation: Conversation, field: str, value: Any
) -> None:
    response = alice.client().post(_url(conversation), envelope_json(alice, **{field: value}), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_request"
    assert field in response.json()["extra"]["fields"]
    assert not Message.objects.exists()
    conversation.refresh_from_db()
    assert conversation.last_seq == 0


def test_history_paging(alice: Dev, bob: Dev, conversation: Conversation) -> None:
    for dev in (alice, bob, alice, bob, alice):
        assert dev.client().post(_url(conversation), envelope_json(dev), format="json").status_code == 201

    first = bob.client().get(_url(conversation), {"after": 0, "limit": 2}).json()
    assert [m["seq"] for m in first["messages"]] == [1, 2]
    assert (first["has_more"], first["next_after"]) == (True, 2)
    rest = bob.client().get(_url(conversation), {"after": first["next_after"], "limit": 10}).json()
    assert [m["seq"] for m in rest["messages"]] == [3, 4, 5]
    assert (rest["has_more"], rest["next_after"]) == (False, 5)
    empty = bob.client().get(_url(conversation), {"after": 5}).json()
    assert empty == {"messages": [], "has_more": False, "next_after": 5}
    default = bob.client().get(_url(conversation)).json()
    assert [m["seq"] for m in default["messages"]] == [1, 2, 3, 4, 5]
    assert default["messages"][1]["sender_username"] == bob.user.username


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
        {"after": -1},
        {"after": "1e3"},
        {"after": str(2**64)},
        {"after": "9" * 5000},
    ],
)
def test_history_bad_paging_is_invalid_request(alice: Dev, conversation: Conversation, query: dict[str, Any]) -> None:
    response = alice.client().get(_url(conversation), query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_history_accepts_limit_bounds(alice: Dev, conversation: Conversation) -> None:
    assert alice.client().get(_url(conversation), {"limit": 1}).status_code == 200
    assert alice.client().get(_url(conversation), {"limit": 500}).status_code == 200


def test_history_endpoint_query_count_does_not_grow(
    alice: Dev, bob: Dev, conversation: Conversation, django_assert_num_queries: Any
) -> None:
    for dev in (alice, bob) * 10:
        dev.client().post(_url(conversation), envelope_json(dev), format="json")
    client = bob.client()
    client.get(_url(conversation))  # touches last_seen_at once
    # Token (with device and user), membership, page.
    with django_assert_num_queries(3):
        response = client.get(_url(conversation))
    assert len(response.json()["messages"]) == 20
