"""Refused fields are named by their path in the request body (protocol.md 3.1): object members
joined with `.`, list items as `[index]` (issue 13: `wrapped_keys: [{}]` used to name
`wrapped_keys` with a Python repr as its message)."""

from __future__ import annotations

import pytest

from devices.models import Device
from tests.builders import Dev, make_dev

pytestmark = pytest.mark.django_db


def test_a_bad_item_of_a_list_is_named_by_its_index_and_field(alice: Dev) -> None:
    pending = make_dev(user=alice.user, status=Device.Status.PENDING)

    response = alice.client().post(
        f"/api/v1/devices/{pending.device.id}/link/keys", {"wrapped_keys": [{}]}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert set(body["extra"]["fields"]) == {
        "wrapped_keys[0].conversation_id",
        "wrapped_keys[0].epoch",
        "wrapped_keys[0].wrapped_key",
        "wrapped_keys[0].signature",
    }
    assert body["extra"]["fields"]["wrapped_keys[0].epoch"] == ["This field is required."]


def test_a_null_item_of_a_list_is_named_by_its_index(alice: Dev) -> None:
    pending = make_dev(user=alice.user, status=Device.Status.PENDING)

    response = alice.client().post(
        f"/api/v1/devices/{pending.device.id}/link/keys", {"wrapped_keys": [None]}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["extra"]["fields"]) == ["wrapped_keys[0]"]
