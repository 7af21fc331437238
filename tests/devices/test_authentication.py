from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from devices.models import Device, DeviceToken
from devices.tokens import token_generate
from tests.builders import b64, make_dev

pytestmark = pytest.mark.django_db


def _with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def test_missing_token_is_not_authenticated(api: APIClient) -> None:
    response = api.get("/api/v1/accounts/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_other_auth_scheme_is_not_authenticated() -> None:
    response = _with_header("Basic YWxpY2U6cGFzcw==").get("/api/v1/accounts/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Bearer short",
        "Bearer " + "!" * 43,
        "Bearer " + "a" * 44,
        "Bearer " + "é" * 43,
        "Bearer " + token_generate(),  # well formed, unknown
    ],
)
def test_bad_token_is_invalid_token(header: str) -> None:
    response = _with_header(header).get("/api/v1/accounts/me")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_logged_out_token_stops_working() -> None:
    dev = make_dev()
    client = dev.client()
    assert client.get("/api/v1/accounts/me").status_code == 200
    assert client.post("/api/v1/accounts/logout").status_code == 204
    response = client.get("/api/v1/accounts/me")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_token_of_deactivated_account_is_invalid() -> None:
    dev = make_dev()
    dev.user.is_active = False
    dev.user.save()
    assert dev.client().get("/api/v1/accounts/me").json()["code"] == "invalid_token"


def test_revoked_token_is_invalid_even_if_device_is_active() -> None:
    dev = make_dev()
    DeviceToken.objects.filter(device=dev.device).update(revoked_at=timezone.now())
    assert dev.client().get("/api/v1/devices").json()["code"] == "invalid_token"


@pytest.mark.parametrize("status", [Device.Status.PENDING, Device.Status.REVOKED])
def test_inactive_device_may_not_use_conversations(status: Device.Status) -> None:
    dev = make_dev(status=status)
    for response in (
        dev.client().get("/api/v1/conversations"),
        dev.client().post("/api/v1/conversations", {}, format="json"),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "device_not_active"


def test_pending_device_may_use_me_its_link_request_and_logout_only() -> None:
    dev = make_dev(status=Device.Status.PENDING)
    client = dev.client()
    assert client.get("/api/v1/accounts/me").status_code == 200
    opened = client.post("/api/v1/devices/link", {"verifier_hash": b64(os.urandom(32))}, format="json")
    assert opened.status_code == 201
    assert client.get("/api/v1/devices/link").status_code == 200
    # Nothing about the account's other devices, conversations or keys before approval.
    for path in ("/api/v1/devices", "/api/v1/conversations", f"/api/v1/devices/{dev.device.id}/link/missing-keys"):
        response = client.get(path)
        assert (response.status_code, response.json()["code"]) == (403, "device_not_active"), path
    assert client.post("/api/v1/accounts/logout").status_code == 204


def test_authentication_touches_last_seen_at_most_once_a_minute(django_assert_num_queries: Any) -> None:
    dev = make_dev()
    client = dev.client()
    client.get("/api/v1/accounts/me")
    dev.device.refresh_from_db()
    first = dev.device.last_seen_at
    assert first is not None
    # A recent last_seen_at: authentication is a single read, no write.
    with django_assert_num_queries(1):
        client.get("/api/v1/accounts/me")
    Device.objects.filter(pk=dev.device.pk).update(last_seen_at=first - timedelta(minutes=2))
    client.get("/api/v1/accounts/me")
    dev.device.refresh_from_db()
    assert dev.device.last_seen_at is not None
    assert dev.device.last_seen_at > first - timedelta(minutes=2)
