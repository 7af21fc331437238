from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from devices.models import Device
from tests.builders import b64, link_approval_json, make_dev
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


def _approve_url(device_id: object) -> str:
    return f"/api/v1/devices/{device_id}/link/approve"


def test_approve_activates_a_pending_device() -> None:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    body = link_approval_json(dev.device, pending)

    response = dev.client().post(_approve_url(pending.id), body, format="json")

    assert response.status_code == 200
    assert response.json()["device_id"] == str(pending.id)
    assert response.json()["status"] == "active"
    assert response.json()["vouch_signature"] == body["vouch_signature"]
    pending.refresh_from_db()
    assert pending.status == Device.Status.ACTIVE
    assert pending.vouched_by_id == dev.device.id


def test_approve_for_another_accounts_device_is_404() -> None:
    dev = make_dev()
    strangers = make_dev(status=Device.Status.PENDING).device
    body = link_approval_json(dev.device, strangers)
    response = dev.client().post(_approve_url(strangers.id), body, format="json")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    strangers.refresh_from_db()
    assert strangers.status == Device.Status.PENDING


def test_approve_for_unknown_device_is_404() -> None:
    dev = make_dev()
    body = link_approval_json(dev.device, DeviceFactory.create(user=dev.user, status=Device.Status.PENDING))
    response = dev.client().post(_approve_url(uuid.uuid4()), body, format="json")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")


def test_pending_device_cannot_approve() -> None:
    dev = make_dev()
    pending = make_dev(user=dev.user, status=Device.Status.PENDING)
    other = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    body = link_approval_json(dev.device, other)
    response = pending.client().post(_approve_url(other.id), body, format="json")
    assert (response.status_code, response.json()["code"]) == (403, "device_not_active")


@pytest.mark.parametrize("signature", [b64(os.urandom(63)), "not base64", None, 64])
def test_vouch_signature_must_be_64_bytes_of_base64(signature: object) -> None:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    body = {**link_approval_json(dev.device, pending), "vouch_signature": signature}
    response = dev.client().post(_approve_url(pending.id), body, format="json")
    assert response.status_code == 400
    assert list(response.json()["extra"]["fields"]) == ["vouch_signature"]
    pending.refresh_from_db()
    assert pending.status == Device.Status.PENDING


# -- linking and the device list (protocol.md 4.7) ------------------------------------------------


def _entry_json(**fields: object) -> dict[str, object]:
    return {
        "version": 1,
        "prev_hash": b64(bytes(32)),
        "change": "created",
        "subject_device_id": "",
        "actor_device_id": "",
        "timestamp_ms": 1764115200000,
        "devices": [],
        "signature": b64(os.urandom(64)),
        **fields,
    }


def _register_body(username: str, *, version: int = 1) -> dict[str, object]:
    device_id = str(uuid.uuid4())
    keys = {"x25519_public_key": b64(os.urandom(32)), "ed25519_public_key": b64(os.urandom(32))}
    return {
        "username": username,
        "password": "a long enough password 2026",
        "identity_key": b64(os.urandom(32)),
        "device": {"device_id": device_id, "name": "laptop", **keys, "vouch_signature": b64(os.urandom(64))},
        "device_list": _entry_json(
            version=version,
            subject_device_id=device_id,
            actor_device_id=device_id,
            devices=[{"device_id": device_id, "name": "laptop", **keys}],
        ),
    }


def test_register_stores_the_first_device_list_entry_and_anyone_can_read_the_list() -> None:
    client = APIClient()
    body = _register_body("carol")
    assert client.post("/api/v1/accounts/register", body, format="json").status_code == 201

    response = client.get("/api/v1/users/carol/device-list")
    assert response.status_code == 200
    (entry,) = response.json()["entries"]
    sent = body["device_list"]
    assert isinstance(sent, dict)
    assert {k: entry[k] for k in sent} == sent
    assert client.get("/api/v1/users/carol/device-list?after=1").json()["entries"] == []
    assert client.get("/api/v1/users/nobody/device-list").status_code == 404


def test_register_with_a_device_list_that_is_not_a_first_entry_writes_nothing() -> None:
    response = APIClient().post("/api/v1/accounts/register", _register_body("dave", version=2), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "stale_device_list")
    assert not Device.objects.filter(user__username="dave").exists()


def _open(pending: Device) -> bytes:
    from devices.services import link_request_open

    verifier = os.urandom(32)
    link_request_open(device=pending, verifier_hash=hashlib.sha256(verifier).digest())
    return verifier


def _approve_body(verifier: bytes) -> dict[str, object]:
    return {
        "verifier": b64(verifier),
        "vouch_signature": b64(os.urandom(64)),
        "device_list": _entry_json(
            version=2, change="linked", subject_device_id=str(uuid.uuid4()), actor_device_id=str(uuid.uuid4())
        ),
        "wrapped_identity_key": b64(os.urandom(80)),
        "approval_mac": b64(os.urandom(32)),
    }


def test_approve_answers_each_bad_code_with_its_error() -> None:
    from datetime import timedelta

    from devices.models import LinkRequest

    dev = make_dev()
    pending = make_dev(user=dev.user, status=Device.Status.PENDING).device
    url = f"/api/v1/devices/{pending.id}/link/approve"
    response = dev.client().post(url, _approve_body(os.urandom(32)), format="json")
    assert (response.status_code, response.json()["code"]) == (404, "link_request_not_found")
    verifier = _open(pending)
    response = dev.client().post(url, _approve_body(os.urandom(32)), format="json")
    assert (response.status_code, response.json()["code"]) == (403, "link_code_invalid")
    LinkRequest.objects.filter(device=pending).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = dev.client().post(url, _approve_body(verifier), format="json")
    assert (response.status_code, response.json()["code"]) == (410, "link_code_expired")
    LinkRequest.objects.filter(device=pending).update(status=LinkRequest.Status.APPROVED)
    response = dev.client().post(url, _approve_body(verifier), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "link_code_used")
    pending.refresh_from_db()
    assert pending.status == Device.Status.PENDING


def test_approve_is_rate_limited_per_device_being_linked() -> None:
    dev = make_dev()
    pending = make_dev(user=dev.user, status=Device.Status.PENDING).device
    _open(pending)
    url = f"/api/v1/devices/{pending.id}/link/approve"
    statuses = [dev.client().post(url, _approve_body(os.urandom(32)), format="json") for _ in range(12)]
    assert [r.status_code for r in statuses] == [403] * 10 + [429] * 2
    assert int(statuses[-1]["Retry-After"]) >= 1


def test_missing_keys_pages_through_the_accounts_epochs() -> None:
    from tests.builders import make_conversation

    dev = make_dev()
    for _ in range(5):
        make_conversation(dev)
    pending = make_dev(user=dev.user, status=Device.Status.PENDING).device
    url = f"/api/v1/devices/{pending.id}/link/missing-keys"
    first = dev.client().get(url, {"limit": 3}).json()
    assert len(first["epochs"]) == 3 and first["has_more"] is True
    second = dev.client().get(url, {"limit": 3, "after": first["next_after"]}).json()
    assert len(second["epochs"]) == 2 and second["has_more"] is False
    seen = {(e["conversation_id"], e["epoch"]) for e in first["epochs"] + second["epochs"]}
    assert len(seen) == 5 and {epoch for _, epoch in seen} == {1}
    response = dev.client().get(f"/api/v1/devices/{uuid.uuid4()}/link/missing-keys")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
