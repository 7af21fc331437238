from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from devices.models import Device
from tests.accounts.factories import PASSWORD, UserFactory
from tests.builders import b64, device_json, link_approval_json, make_dev, register_json
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db

OWN_DEVICE_KEYS = {
    "device_id",
    "x25519_public_key",
    "ed25519_public_key",
    "vouch_signature",
    "name",
    "status",
    "created_at",
    "last_seen_at",
}


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_register_answers_account_device_and_token(api: APIClient) -> None:
    body = register_json("alice", PASSWORD)

    response = api.post("/api/v1/accounts/register", body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == {"username", "identity_key", "device", "token"}
    assert data["username"] == "alice"
    assert data["identity_key"] == body["identity_key"]
    device = data["device"]
    assert set(device) == OWN_DEVICE_KEYS
    assert device["device_id"] == body["device"]["device_id"]
    assert device["status"] == "active"
    assert device["vouch_signature"] == body["device"]["vouch_signature"]
    assert device["created_at"].endswith("Z")
    assert len(data["token"]) == 43
    me = _bearer(data["token"]).get("/api/v1/accounts/me")
    assert me.status_code == 200
    assert me.json()["device"]["device_id"] == device["device_id"]


@pytest.mark.parametrize("username", ["Alice", "al", "a" * 33, "al ice", "alice!", "alice\n", "élise", ""])
def test_register_refuses_malformed_username(api: APIClient, username: str) -> None:
    response = api.post("/api/v1/accounts/register", register_json(username, PASSWORD), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert "username" in response.json()["extra"]["fields"]
    assert not User.objects.exists()


def test_register_refuses_weak_password(api: APIClient) -> None:
    response = api.post("/api/v1/accounts/register", register_json("alice", "12345678"), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "password_invalid"
    assert body["extra"]["messages"]
    assert not User.objects.exists()


def test_register_refuses_taken_username(api: APIClient) -> None:
    UserFactory.create(username="alice")
    response = api.post("/api/v1/accounts/register", register_json("alice", PASSWORD), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "username_taken")


def test_register_refuses_taken_device_id(api: APIClient) -> None:
    existing = DeviceFactory.create()
    body = register_json("alice", PASSWORD)
    body["device"]["device_id"] = str(existing.id)
    response = api.post("/api/v1/accounts/register", body, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "device_id_taken")
    assert not User.objects.filter(username="alice").exists()


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_register_refuses_bad_device_name(api: APIClient, name: str) -> None:
    body = register_json("alice", PASSWORD)
    body["device"]["name"] = name
    response = api.post("/api/v1/accounts/register", body, format="json")
    assert response.status_code == 400
    assert "device.name" in response.json()["extra"]["fields"]


def test_login_new_device_is_pending_and_limited(api: APIClient) -> None:
    UserFactory.create(username="alice")
    body = {"username": "alice", "password": PASSWORD, "device": device_json(name="phone")}

    response = api.post("/api/v1/accounts/login", body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == {"device", "token"}
    assert data["device"]["status"] == "pending"
    assert data["device"]["vouch_signature"] is None
    assert data["device"]["name"] == "phone"
    client = _bearer(data["token"])
    assert client.get("/api/v1/accounts/me").status_code == 200
    assert client.get("/api/v1/conversations").json()["code"] == "device_not_active"


def test_login_again_replaces_the_token(api: APIClient) -> None:
    dev = make_dev(user=UserFactory.create(username="alice"))
    body = {
        "username": "alice",
        "password": PASSWORD,
        "device": device_json(
            device_id=str(dev.device.id),
            x25519_public_key=b64(bytes(dev.device.x25519_public_key)),
            ed25519_public_key=b64(bytes(dev.device.ed25519_public_key)),
        ),
    }
    response = api.post("/api/v1/accounts/login", body, format="json")
    assert response.status_code == 201
    assert response.json()["device"]["status"] == "active"
    assert dev.client().get("/api/v1/accounts/me").json()["code"] == "invalid_token"
    assert _bearer(response.json()["token"]).get("/api/v1/accounts/me").status_code == 200


def test_login_with_existing_device_id_and_other_keys_is_refused(api: APIClient) -> None:
    dev = make_dev(user=UserFactory.create(username="alice"))
    body = {"username": "alice", "password": PASSWORD, "device": device_json(device_id=str(dev.device.id))}
    response = api.post("/api/v1/accounts/login", body, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "device_id_taken")


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "not the password"), ("nobody", PASSWORD), ("ALICE", PASSWORD)]
)
def test_login_with_invalid_credentials_is_401(api: APIClient, username: str, password: str) -> None:
    UserFactory.create(username="alice")
    body = {"username": username, "password": password, "device": device_json()}
    response = api.post("/api/v1/accounts/login", body, format="json")
    assert (response.status_code, response.json()["code"]) == (401, "invalid_credentials")
    assert not Device.objects.exists()


def test_logout_revokes_only_the_token_used() -> None:
    laptop = make_dev()
    phone = make_dev(user=laptop.user)
    response = laptop.client().post("/api/v1/accounts/logout")
    assert response.status_code == 204
    assert response.content == b""
    assert laptop.client().get("/api/v1/accounts/me").status_code == 401
    assert phone.client().get("/api/v1/accounts/me").status_code == 200


def test_me_describes_the_authenticated_device() -> None:
    dev = make_dev(user=UserFactory.create(username="alice"))
    data = dev.client().get("/api/v1/accounts/me").json()
    assert data["username"] == "alice"
    assert data["identity_key"] == b64(bytes(dev.user.identity_key))
    assert set(data["device"]) == OWN_DEVICE_KEYS
    assert data["device"]["device_id"] == str(dev.device.id)


def test_directory_shows_active_devices_publicly(api: APIClient) -> None:
    alice = make_dev(user=UserFactory.create(username="alice"))
    DeviceFactory.create(user=alice.user, status=Device.Status.PENDING)

    response = api.get("/api/v1/users/alice")

    assert response.status_code == 200
    data = response.json()
    assert data["username"] == "alice"
    assert data["identity_key"] == b64(bytes(alice.user.identity_key))
    assert alice.device.vouch_signature is not None
    assert data["devices"] == [
        {
            "device_id": str(alice.device.id),
            "x25519_public_key": b64(bytes(alice.device.x25519_public_key)),
            "ed25519_public_key": b64(bytes(alice.device.ed25519_public_key)),
            "vouch_signature": b64(bytes(alice.device.vouch_signature)),
        }
    ]


def test_directory_ignores_a_bad_token(api: APIClient) -> None:
    UserFactory.create(username="alice")
    api.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert api.get("/api/v1/users/alice").status_code == 200


@pytest.mark.parametrize("username", ["nobody", "ALICE", "%F0%9F%92%A5", "a%00b"])
def test_directory_unknown_user_is_user_not_found(api: APIClient, username: str) -> None:
    UserFactory.create(username="alice")
    response = api.get(f"/api/v1/users/{username}")
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"


def _register_body(**overrides: Any) -> dict[str, Any]:
    body = register_json("alice", PASSWORD)
    body.update(overrides)
    return body


def test_register_then_login_then_link_flow(api: APIClient) -> None:
    registered = api.post("/api/v1/accounts/register", _register_body(), format="json").json()
    login = api.post(
        "/api/v1/accounts/login",
        {"username": "alice", "password": PASSWORD, "device": device_json(name="phone")},
        format="json",
    ).json()
    new_id = login["device"]["device_id"]
    body = link_approval_json(Device.objects.get(pk=registered["device"]["device_id"]), Device.objects.get(pk=new_id))
    signature = body["vouch_signature"]

    vouched = _bearer(registered["token"]).post(f"/api/v1/devices/{new_id}/link/approve", body, format="json")

    assert vouched.status_code == 200
    assert vouched.json()["status"] == "active"
    assert vouched.json()["vouch_signature"] == signature
    assert _bearer(login["token"]).get("/api/v1/conversations").status_code == 200
    directory = api.get("/api/v1/users/alice").json()
    assert [d["device_id"] for d in directory["devices"]] == [registered["device"]["device_id"], new_id]
    assert uuid.UUID(new_id)
