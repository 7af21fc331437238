"""Device revocation: the service, the REST endpoint, and what both leave behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from common.realtime import device_group
from common.testing import PublishedEvent
from devices.errors import DeviceAlreadyRevokedError, DeviceNotActiveError
from devices.models import Device, DeviceToken
from devices.services import device_revoke
from tests.builders import link_approval_json, make_dev
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_revoke_revokes_device_and_every_live_token_and_publishes_after_commit(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    dev = make_dev()
    with django_capture_on_commit_callbacks(execute=True):
        device_revoke(device=dev.device, reason="test")

    dev.device.refresh_from_db()
    assert dev.device.status == Device.Status.REVOKED
    assert not DeviceToken.objects.filter(device=dev.device, revoked_at__isnull=True).exists()
    assert published == [
        PublishedEvent(device_group(dev.device.id), {"type": "device.revoked", "device_id": str(dev.device.id)})
    ]


def test_revoke_twice_is_device_already_revoked_and_publishes_nothing(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    dev = make_dev()
    device_revoke(device=dev.device, reason="test")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DeviceAlreadyRevokedError):
        device_revoke(device=dev.device, reason="test")
    assert published == []


def test_revoke_by_a_revoked_device_is_refused() -> None:
    dev = make_dev()
    other = make_dev(user=dev.user)
    device_revoke(device=dev.device, reason="test")
    with pytest.raises(DeviceNotActiveError):
        device_revoke(device=other.device, revoked_by_device=dev.device, reason="test")
    other.device.refresh_from_db()
    assert other.device.status == Device.Status.ACTIVE


def test_rest_revoke_of_another_device_of_the_account(
    published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    laptop = make_dev()
    phone = make_dev(user=laptop.user)

    with django_capture_on_commit_callbacks(execute=True):
        response = laptop.client().post(f"/api/v1/devices/{phone.device.id}/revoke")

    assert response.status_code == 200
    assert response.json()["device_id"] == str(phone.device.id)
    assert response.json()["status"] == "revoked"
    assert phone.client().get("/api/v1/accounts/me").json()["code"] == "invalid_token"
    assert laptop.client().get("/api/v1/accounts/me").status_code == 200
    assert [e.event["type"] for e in published] == ["device.revoked"]


def test_rest_revoke_of_itself_ends_its_own_token() -> None:
    dev = make_dev()
    response = dev.client().post(f"/api/v1/devices/{dev.device.id}/revoke")
    assert response.status_code == 200
    assert dev.client().get("/api/v1/devices").status_code == 401


def test_rest_revoke_of_another_accounts_device_is_404_and_changes_nothing() -> None:
    dev = make_dev()
    stranger = make_dev()
    response = dev.client().post(f"/api/v1/devices/{stranger.device.id}/revoke")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    stranger.device.refresh_from_db()
    assert stranger.device.status == Device.Status.ACTIVE


def test_rest_revoke_of_unknown_device_is_404() -> None:
    response = make_dev().client().post(f"/api/v1/devices/{uuid.uuid4()}/revoke")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")


def test_rest_revoke_of_a_revoked_device_is_409() -> None:
    dev = make_dev()
    revoked = DeviceFactory.create(user=dev.user, status=Device.Status.REVOKED)
    response = dev.client().post(f"/api/v1/devices/{revoked.id}/revoke")
    assert (response.status_code, response.json()["code"]) == (409, "device_already_revoked")


def test_rest_revoke_needs_an_active_device() -> None:
    dev = make_dev()
    pending = make_dev(user=dev.user, status=Device.Status.PENDING)
    response = pending.client().post(f"/api/v1/devices/{dev.device.id}/revoke")
    assert (response.status_code, response.json()["code"]) == (403, "device_not_active")


def test_a_pending_device_can_be_refused_by_revoking_it() -> None:
    dev = make_dev()
    pending = make_dev(user=dev.user, status=Device.Status.PENDING)
    approval = link_approval_json(dev.device, pending.device)
    assert dev.client().post(f"/api/v1/devices/{pending.device.id}/revoke").status_code == 200
    # Its link request ended with it: the code it showed no longer works.
    response = dev.client().post(f"/api/v1/devices/{pending.device.id}/link/approve", approval, format="json")
    assert (response.status_code, response.json()["code"]) == (410, "link_code_expired")
