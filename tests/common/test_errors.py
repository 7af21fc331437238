from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from common.exception_handler import flatten_validation_errors
from common.http_errors import server_error
from tests.builders import make_dev


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert set(body) == {"code", "message", "extra"}
    return body


def test_flatten_validation_errors_gives_field_paths() -> None:
    detail = {
        "username": ["bad"],
        "epoch": {"wrapped_keys": [{}, {"signature": ["short"]}], "number": ["not int"]},
        "members": {0: ["bad name"]},
    }
    assert flatten_validation_errors(detail) == {
        "username": ["bad"],
        "epoch.wrapped_keys[1].signature": ["short"],
        "epoch.number": ["not int"],
        "members[0]": ["bad name"],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/api/v1/nope", "/api/v1/accounts/register/", "/api/v2/conversations", "/api/v1/conversations/NOT-A-UUID"],
)
def test_unknown_api_url_is_json_not_found(api: APIClient, path: str) -> None:
    _assert_error(api.get(path), 404, "not_found")


@pytest.mark.django_db
def test_unsupported_method_is_405(api: APIClient) -> None:
    _assert_error(api.get("/api/v1/accounts/register"), 405, "method_not_allowed")
    _assert_error(api.options("/api/v1/accounts/register"), 405, "method_not_allowed")
    _assert_error(api.delete("/api/v1/users/alice"), 405, "method_not_allowed")


@pytest.mark.django_db
def test_non_json_body_is_415(api: APIClient) -> None:
    response = api.post("/api/v1/accounts/register", "username=alice", content_type="application/x-www-form-urlencoded")
    _assert_error(response, 415, "unsupported_media_type")
    _assert_error(api.post("/api/v1/accounts/login", "hi", content_type="text/plain"), 415, "unsupported_media_type")


@pytest.mark.django_db
def test_malformed_json_is_invalid_request(api: APIClient) -> None:
    body = _assert_error(
        api.post("/api/v1/accounts/login", "{not json", content_type="application/json"), 400, "invalid_request"
    )
    assert body["extra"] == {"fields": {}}


@pytest.mark.django_db
def test_crash_in_an_api_view_is_json_500() -> None:
    dev = make_dev()
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {dev.token}")
    with mock.patch("devices.apis.device_list_own", side_effect=RuntimeError("boom")):
        response = client.get("/api/v1/devices")
    _assert_error(response, 500, "internal_error")


def test_handler500_is_html_outside_the_api() -> None:
    response = server_error(RequestFactory().get("/admin/"))
    assert response.status_code == 500
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/html", "application/xml", "*/*", "application/json; indent=4"])
def test_answers_are_json_whatever_the_accept_header(accept: str) -> None:
    response = make_dev().client().get("/api/v1/devices", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert b"\n" not in response.content
