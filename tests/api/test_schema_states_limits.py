"""The OpenAPI schema says what the server accepts (issue 13: schemathesis found ten schema-valid
requests the server refused). Each case: the schema's rule, and the server agreeing with it.
tests/fuzz/test_openapi_fuzz.py checks the same at large, with every schemathesis check."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from devices.models import Device
from tests.builders import Dev, make_dev

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/v1/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _component(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return found


def _body(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = schema["paths"][path][method]["requestBody"]
    return _component(schema, body["content"]["application/json"]["schema"]["$ref"])


def _query(schema: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    (parameter,) = [p for p in schema["paths"][path][method]["parameters"] if p["name"] == name]
    found: dict[str, Any] = parameter["schema"]
    return found


def test_page_limits_and_cursors_have_their_bounds(schema: dict[str, Any]) -> None:
    limit = _query(schema, "get", "/api/v1/devices/{device_id}/link/missing-keys", "limit")
    after = _query(schema, "get", "/api/v1/users/{username}/device-list", "after")

    assert (limit["minimum"], limit["maximum"]) == (1, 200)
    assert (after["minimum"], after["maximum"]) == (0, 2**31 - 1)


def test_a_direct_conversation_names_exactly_one_member(schema: dict[str, Any]) -> None:
    create = schema["paths"]["/api/v1/conversations"]["post"]["requestBody"]
    choices = {
        ref.rsplit("/", 1)[-1]: _component(schema, ref)
        for ref in _component(schema, create["content"]["application/json"]["schema"]["$ref"])["discriminator"][
            "mapping"
        ].values()
    }

    direct = choices["DirectConversationCreateRequest"]["properties"]["members"]
    assert create["required"] is True
    assert (direct["minItems"], direct["maxItems"]) == (1, 1)


def test_link_keys_are_a_non_empty_list_of_key_objects(schema: dict[str, Any]) -> None:
    keys = _body(schema, "post", "/api/v1/devices/{device_id}/link/keys")["properties"]["wrapped_keys"]

    assert (keys["minItems"], keys["maxItems"]) == (1, 200)
    assert set(_component(schema, keys["items"]["$ref"])["required"]) == {
        "conversation_id",
        "epoch",
        "wrapped_key",
        "signature",
    }


def test_a_blob_length_above_the_server_limit_is_outside_the_schema(schema: dict[str, Any]) -> None:
    length = _body(schema, "post", "/api/v1/media")["properties"]["length"]

    assert length["maximum"] == django_settings.E2EE_MEDIA_MAX_BYTES


def test_strings_of_requests_refuse_nul_and_new_passwords_state_their_rules(schema: dict[str, Any]) -> None:
    login = _body(schema, "post", "/api/v1/accounts/login")["properties"]
    password = _body(schema, "post", "/api/v1/accounts/register")["properties"]["password"]

    assert re.search(login["password"]["pattern"], "pass\x00word") is None
    assert password["minLength"] == 8
    assert re.search(password["pattern"], "12345678") is None and re.search(password["pattern"], "1234567a")


@pytest.mark.parametrize("url", ["0", "GET", "http://u:p@host/", "http://host:65536/", "ftp://host/"])
def test_a_push_target_url_outside_the_schema_is_refused(alice: Dev, schema: dict[str, Any], url: str) -> None:
    body = _body(schema, "put", "/api/v1/devices/me/push-target")
    webhook = _component(schema, body["discriminator"]["mapping"]["webhook"])

    response = alice.client().put("/api/v1/devices/me/push-target", {"kind": "webhook", "url": url}, format="json")

    assert re.search(webhook["properties"]["url"]["pattern"], url) is None
    assert response.status_code == 400 and response.json()["code"] == "push_target_url_refused"


def test_an_empty_list_is_refused_under_its_own_path(alice: Dev) -> None:
    pending = make_dev(user=alice.user, status=Device.Status.PENDING)
    response = alice.client().post(
        f"/api/v1/devices/{pending.device.id}/link/keys", {"wrapped_keys": []}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["extra"]["fields"]) == ["wrapped_keys"]


def test_strings_are_taken_as_sent_not_trimmed(alice: Dev, settings: Any) -> None:
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = True  # no DNS lookup of the example host
    # " " passed the schema (a string of at most 128 characters) and was then refused as blank
    # once trimmed; now it reaches the service, which refuses Web Push here for want of a key.
    body = {"kind": "webpush", "url": "https://push.example.com/x", "keys": {"p256dh": " ", "auth": " "}}

    response = alice.client().put("/api/v1/devices/me/push-target", body, format="json")

    assert response.status_code == 409 and response.json()["code"] == "webpush_not_configured"


def test_a_boolean_is_a_json_boolean(alice: Dev, bob: Dev) -> None:
    response = alice.client().post(
        "/api/v1/conversations",
        {
            "conversation_id": "00000000-0000-4000-8000-000000000000",
            "kind": "group",
            "members": [],
            "share_history": "true",
        },
        format="json",
    )

    assert response.status_code == 400
    assert "share_history" in response.json()["extra"]["fields"]
