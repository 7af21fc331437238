from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from conversations.models import ChatKeyEpoch, Conversation, Membership, WrappedKey
from tests.accounts.factories import UserFactory
from tests.builders import (
    Dev,
    active_devices,
    b64,
    envelope_json,
    make_conversation,
    make_dev,
    manifest_json,
    wrapped_keys_json,
)
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Dev:
    return make_dev(user=UserFactory.create(username="alice"))


@pytest.fixture
def bob() -> Dev:
    return make_dev(user=UserFactory.create(username="bob"))


def _create_body(kind: str, members: list[str], devices: list[Any], **overrides: Any) -> dict[str, Any]:
    body = {
        "conversation_id": str(uuid.uuid4()),
        "kind": kind,
        "members": members,
        "epoch": {"number": 1, "wrapped_keys": wrapped_keys_json(devices), **manifest_json()},
    }
    body.update(overrides)
    return body


def _rows() -> tuple[int, int, int, int]:
    return (
        Conversation.objects.count(),
        Membership.objects.count(),
        ChatKeyEpoch.objects.count(),
        WrappedKey.objects.count(),
    )


def test_create_direct_conversation(alice: Dev, bob: Dev) -> None:
    body = _create_body("direct", ["bob"], active_devices(alice.user, bob.user))

    response = alice.client().post("/api/v1/conversations", body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data == {
        "conversation_id": body["conversation_id"],
        "kind": "direct",
        "members": ["alice", "bob"],
        "current_epoch": 1,
        "last_seq": 0,
        "share_history": True,
        "created_at": data["created_at"],
    }


def test_create_refuses_incomplete_coverage_with_the_missing_list(alice: Dev, bob: Dev) -> None:
    phone = DeviceFactory.create(user=bob.user)
    before = _rows()
    body = _create_body("group", ["bob"], [alice.device, bob.device])

    response = alice.client().post("/api/v1/conversations", body, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "missing_devices"
    assert response.json()["extra"] == {"missing_devices": [{"username": "bob", "device_id": str(phone.id)}]}
    assert _rows() == before


def test_create_refuses_unexpected_devices_with_the_list(alice: Dev, bob: Dev) -> None:
    stranger = DeviceFactory.create()
    before = _rows()
    body = _create_body("group", ["bob"], [alice.device, bob.device, stranger])

    response = alice.client().post("/api/v1/conversations", body, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "unexpected_devices"
    assert response.json()["extra"] == {"device_ids": [str(stranger.id)]}
    assert _rows() == before


def test_create_second_direct_conversation_is_409_with_its_id(alice: Dev, bob: Dev) -> None:
    first = make_conversation(alice, bob.user, kind=Conversation.Kind.DIRECT)
    body = _create_body("direct", ["alice"], active_devices(alice.user, bob.user))
    response = bob.client().post("/api/v1/conversations", body, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "code": "direct_conversation_exists",
        "message": response.json()["message"],
        "extra": {"conversation_id": str(first.pk)},
    }


def test_create_direct_needs_one_peer(alice: Dev, bob: Dev) -> None:
    body = _create_body("direct", [], active_devices(alice.user))
    response = alice.client().post("/api/v1/conversations", body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "direct_needs_one_peer")


def test_create_with_unknown_member_is_404(alice: Dev) -> None:
    body = _create_body("group", ["ghost"], active_devices(alice.user))
    response = alice.client().post("/api/v1/conversations", body, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert response.json()["extra"] == {"usernames": ["ghost"]}


def test_create_with_taken_id_is_409(alice: Dev) -> None:
    existing = make_conversation(alice)
    body = _create_body("group", [], active_devices(alice.user), conversation_id=str(existing.pk))
    response = alice.client().post("/api/v1/conversations", body, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "conversation_id_taken")


def test_create_with_first_epoch_not_1_is_epoch_conflict(alice: Dev) -> None:
    body = _create_body("group", [], active_devices(alice.user))
    body["epoch"]["number"] = 2
    response = alice.client().post("/api/v1/conversations", body, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "epoch_conflict")
    assert response.json()["extra"] == {"current_epoch": 0}


def test_list_and_get_show_only_own_conversations(alice: Dev, bob: Dev) -> None:
    shared = make_conversation(alice, bob.user)
    alone = make_conversation(alice)
    bobs = make_conversation(bob)

    listed = alice.client().get("/api/v1/conversations").json()["conversations"]
    assert [c["conversation_id"] for c in listed] == [str(alone.pk), str(shared.pk)]  # newest first
    got = alice.client().get(f"/api/v1/conversations/{shared.pk}")
    assert got.status_code == 200
    assert got.json()["members"] == ["alice", "bob"]
    hidden = alice.client().get(f"/api/v1/conversations/{bobs.pk}")
    assert (hidden.status_code, hidden.json()["code"]) == (404, "conversation_not_found")


def test_epoch_upload_and_keys(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    body: dict[str, Any] = {
        "number": 2,
        "wrapped_keys": wrapped_keys_json(active_devices(alice.user, bob.user)),
        **manifest_json(),
    }

    response = bob.client().post(f"/api/v1/conversations/{conversation.pk}/epochs", body, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["conversation_id"] == str(conversation.pk)
    assert response.json()["epoch"] == 2
    assert "created_at" in response.json()
    mine = next(k for k in body["wrapped_keys"] if k["device_id"] == str(alice.device.id))
    keys = alice.client().get(f"/api/v1/conversations/{conversation.pk}/keys").json()["keys"]
    assert [k["epoch"] for k in keys] == [1, 2]
    assert keys[1] == {
        "epoch": 2,
        "wrapped_key": mine["wrapped_key"],
        "signature": mine["signature"],
        "wrapped_by_device_id": str(bob.device.id),
        "wrapped_by_username": "bob",
        "epoch_created_by_device_id": str(bob.device.id),
        "epoch_created_by_username": "bob",
        "manifest": body["manifest"],
        "manifest_signature": body["manifest_signature"],
    }
    epoch = bob.client().get(f"/api/v1/conversations/{conversation.pk}/epochs/2").json()
    assert (epoch["created_by_username"], epoch["manifest"], epoch["manifest_signature"]) == (
        "bob",
        body["manifest"],
        body["manifest_signature"],
    )
    again = bob.client().post(f"/api/v1/conversations/{conversation.pk}/epochs", body, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "epoch_conflict")
    assert again.json()["extra"] == {"current_epoch": 2}


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"manifest_signature": b64(os.urandom(64))}, "manifest"),
        ({"manifest": b64(os.urandom(120))}, "manifest_signature"),
        ({"manifest": "", "manifest_signature": b64(os.urandom(64))}, "manifest"),
        ({"manifest": b64(os.urandom(65_537)), "manifest_signature": b64(os.urandom(64))}, "manifest"),
        ({"manifest": b64(os.urandom(120)), "manifest_signature": b64(os.urandom(63))}, "manifest_signature"),
    ],
)
def test_epoch_upload_without_a_wellformed_manifest_is_invalid_request(
    alice: Dev, bob: Dev, fields: dict[str, str], bad: str
) -> None:
    conversation = make_conversation(alice, bob.user)
    body = {"number": 2, "wrapped_keys": wrapped_keys_json(active_devices(alice.user, bob.user)), **fields}

    response = bob.client().post(f"/api/v1/conversations/{conversation.pk}/epochs", body, format="json")

    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert list(response.json()["extra"]["fields"]) == [bad]
    conversation.refresh_from_db()
    assert conversation.current_epoch == 1


def test_two_devices_of_one_user_get_different_wrapped_keys(alice: Dev, bob: Dev) -> None:
    phone = make_dev(user=alice.user)
    conversation = make_conversation(alice, bob.user)
    laptop_keys = alice.client().get(f"/api/v1/conversations/{conversation.pk}/keys").json()["keys"]
    phone_keys = phone.client().get(f"/api/v1/conversations/{conversation.pk}/keys").json()["keys"]
    assert len(laptop_keys) == len(phone_keys) == 1
    assert laptop_keys[0]["wrapped_key"] != phone_keys[0]["wrapped_key"]
    stored = WrappedKey.objects.get(recipient_device=phone.device)
    assert phone_keys[0]["wrapped_key"] == b64(bytes(stored.wrapped_key))


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("get", "/keys", None),
        ("get", "/messages", None),
        ("post", "/messages", "envelope"),
        ("post", "/epochs", "epoch"),
    ],
)
def test_non_member_gets_conversation_not_found_everywhere(
    alice: Dev, bob: Dev, method: str, suffix: str, body: str | None
) -> None:
    conversation = make_conversation(alice)
    payload = {
        None: None,
        "envelope": envelope_json(bob),
        "epoch": {"number": 2, "wrapped_keys": wrapped_keys_json(active_devices(alice.user)), **manifest_json()},
    }[body]
    client = bob.client()
    for conversation_id in (conversation.pk, uuid.uuid4()):
        url = f"/api/v1/conversations/{conversation_id}{suffix}"
        response = getattr(client, method)(url, payload, format="json") if payload else getattr(client, method)(url)
        assert response.status_code == 404, response.json()
        assert response.json()["code"] == "conversation_not_found"
    assert _rows()[2] == 1  # no epoch was added


def test_wrapped_key_lengths_are_checked(alice: Dev) -> None:
    body = _create_body("group", [], active_devices(alice.user))
    body["epoch"]["wrapped_keys"][0]["wrapped_key"] = b64(os.urandom(79))
    response = alice.client().post("/api/v1/conversations", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["extra"]["fields"]) == ["epoch.wrapped_keys[0].wrapped_key"]
    assert _rows() == (0, 0, 0, 0)


def test_epoch_detail_names_every_recipient_device_and_hides_from_non_members(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    carol = make_dev(user=UserFactory.create(username="carol"))

    response = bob.client().get(f"/api/v1/conversations/{conversation.pk}/epochs/1")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["conversation_id"] == str(conversation.pk)
    assert (data["epoch"], data["created_by_device_id"]) == (1, str(alice.device.id))
    expected = [{"username": d.user.username, "device_id": str(d.device.id)} for d in (alice, bob)]
    assert data["recipients"] == sorted(expected, key=lambda r: r["device_id"])
    missing = bob.client().get(f"/api/v1/conversations/{conversation.pk}/epochs/2")
    assert (missing.status_code, missing.json()["code"]) == (404, "epoch_not_found")
    hidden = carol.client().get(f"/api/v1/conversations/{conversation.pk}/epochs/1")
    assert (hidden.status_code, hidden.json()["code"]) == (404, "conversation_not_found")


def test_member_add_remove_and_leave_over_http(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user)
    carol = make_dev(user=UserFactory.create(username="carol"))
    history = [{"epoch": 1, **key} for key in wrapped_keys_json(active_devices(carol.user))]
    url = f"/api/v1/conversations/{conversation.pk}/members"

    added = bob.client().post(url, {"username": "carol", "history_keys": history}, format="json")

    assert added.status_code == 200, added.json()
    assert added.json()["members"] == ["alice", "bob", "carol"]
    assert added.json()["share_history"] is True
    again = bob.client().post(url, {"username": "carol", "history_keys": history}, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "already_member")
    no_epoch = alice.client().delete(f"{url}/bob", {}, format="json")
    assert (no_epoch.status_code, no_epoch.json()["code"]) == (400, "epoch_required")
    epoch = {"number": 2, "wrapped_keys": wrapped_keys_json(active_devices(alice.user, carol.user)), **manifest_json()}
    removed = alice.client().delete(f"{url}/bob", {"epoch": epoch}, format="json")
    assert removed.status_code == 204
    assert bob.client().get(f"/api/v1/conversations/{conversation.pk}").status_code == 404
    left = carol.client().delete(f"{url}/carol", {}, format="json")
    assert left.status_code == 204
    assert alice.client().get(f"/api/v1/conversations/{conversation.pk}").json()["members"] == ["alice"]


def test_member_changes_in_a_direct_conversation_are_refused(alice: Dev, bob: Dev) -> None:
    conversation = make_conversation(alice, bob.user, kind=Conversation.Kind.DIRECT)
    UserFactory.create(username="carol")

    response = alice.client().post(
        f"/api/v1/conversations/{conversation.pk}/members", {"username": "carol"}, format="json"
    )

    assert (response.status_code, response.json()["code"]) == (409, "direct_members_fixed")
