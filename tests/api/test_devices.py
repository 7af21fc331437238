from __future__ import annotations

import os
import uuid

import pytest

from devices.models import Device
from tests.builders import b64, make_dev
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_device_list_shows_every_device_of_the_account_only() -> None:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    revoked = DeviceFactory.create(user=dev.user, status=Device.Status.REVOKED)
    DeviceFactory.create()  # another account's

    response = dev.client().get("/api/v1/devices")

    assert response.status_code == 200
    listed = {d["device_id"]: d["status"] for d in response.json()["devices"]}
    assert listed == {str(dev.device.id): "active", str(pending.id): "pending", str(revoked.id): "revoked"}


def test_vouch_activates_a_pending_device() -> None:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    signature = b64(os.urandom(64))

    response = dev.client().post(f"/api/v1/devices/{pending.id}/vouch", {"vouch_signature": signature}, format="json")

    assert response.status_code == 200
    assert response.json()["device_id"] == str(pending.id)
    assert response.json()["status"] == "active"
    pending.refresh_from_db()
    assert pending.status == Device.Status.ACTIVE
    assert pending.vouched_by_id == dev.device.id


def test_vouch_for_another_accounts_device_is_404() -> None:
    dev = make_dev()
    strangers = DeviceFactory.create(status=Device.Status.PENDING)
    response = dev.client().post(
        f"/api/v1/devices/{strangers.id}/vouch", {"vouch_signature": b64(os.urandom(64))}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    strangers.refresh_from_db()
    assert strangers.status == Device.Status.PENDING


def test_vouch_for_unknown_device_is_404() -> None:
    response = (
        make_dev()
        .client()
        .post(f"/api/v1/devices/{uuid.uuid4()}/vouch", {"vouch_signature": b64(os.urandom(64))}, format="json")
    )
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")


def test_vouch_for_non_pending_device_is_409() -> None:
    dev = make_dev()
    other = DeviceFactory.create(user=dev.user)
    response = dev.client().post(
        f"/api/v1/devices/{other.id}/vouch", {"vouch_signature": b64(os.urandom(64))}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (409, "device_not_pending")


def test_pending_device_cannot_vouch() -> None:
    pending = make_dev(status=Device.Status.PENDING)
    other = DeviceFactory.create(user=pending.user, status=Device.Status.PENDING)
    response = pending.client().post(
        f"/api/v1/devices/{other.id}/vouch", {"vouch_signature": b64(os.urandom(64))}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (403, "device_not_active")


@pytest.mark.parametrize("signature", [b64(os.urandom(63)), "not base64", None, 64])
def test_vouch_signature_must_be_64_bytes_of_base64(signature: object) -> None:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    response = dev.client().post(f"/api/v1/devices/{pending.id}/vouch", {"vouch_signature": signature}, format="json")
    assert response.status_code == 400
    assert list(response.json()["extra"]["fields"]) == ["vouch_signature"]
    pending.refresh_from_db()
    assert pending.status == Device.Status.PENDING
