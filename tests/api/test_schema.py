"""The OpenAPI schema: generated from the code without a warning, served as JSON, with Swagger UI
from local files."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

API_OPERATIONS = {
    ("post", "/api/v1/accounts/register"),
    ("post", "/api/v1/accounts/reset-identity"),
    ("post", "/api/v1/accounts/login"),
    ("post", "/api/v1/accounts/logout"),
    ("get", "/api/v1/accounts/me"),
    ("get", "/api/v1/users/{username}"),
    ("get", "/api/v1/devices"),
    ("post", "/api/v1/devices/{device_id}/revoke"),
    ("get", "/api/v1/devices/link"),
    ("post", "/api/v1/devices/link"),
    ("post", "/api/v1/devices/{device_id}/link/approve"),
    ("get", "/api/v1/devices/{device_id}/link/missing-keys"),
    ("post", "/api/v1/devices/{device_id}/link/keys"),
    ("post", "/api/v1/conversations/{conversation_id}/key-requests"),
    ("get", "/api/v1/key-requests"),
    ("post", "/api/v1/key-requests/{request_id}/answer"),
    ("get", "/api/v1/users/{username}/device-list"),
    ("get", "/api/v1/conversations"),
    ("post", "/api/v1/conversations"),
    ("get", "/api/v1/conversations/{conversation_id}"),
    ("post", "/api/v1/conversations/{conversation_id}/epochs"),
    ("get", "/api/v1/conversations/{conversation_id}/epochs/{number}"),
    ("post", "/api/v1/conversations/{conversation_id}/members"),
    ("delete", "/api/v1/conversations/{conversation_id}/members/{username}"),
    ("get", "/api/v1/conversations/{conversation_id}/keys"),
    ("get", "/api/v1/conversations/{conversation_id}/messages"),
    ("post", "/api/v1/conversations/{conversation_id}/messages"),
    ("post", "/api/v1/media"),
    ("get", "/api/v1/media/{blob_id}"),
    ("post", "/api/v1/media/{blob_id}/complete"),
    ("put", "/api/v1/media/{blob_id}/content"),
    ("get", "/api/v1/media/{blob_id}/content"),
    # Push notifications (protocol.md 4.6)
    ("get", "/api/v1/devices/me/push-target"),
    ("put", "/api/v1/devices/me/push-target"),
    ("delete", "/api/v1/devices/me/push-target"),
    ("get", "/api/v1/push/config"),
    ("put", "/api/v1/conversations/{conversation_id}/mute"),
    ("delete", "/api/v1/conversations/{conversation_id}/mute"),
}


def test_schema_generates_and_validates_without_warnings() -> None:
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    assert '"openapi": "3.0.3"' in out.getvalue()


def test_schema_is_served_as_json_and_covers_every_operation_with_errors() -> None:
    response = Client().get("/api/v1/schema")
    assert response.status_code == 200
    schema = response.json()
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert operations == API_OPERATIONS
    error_ref = "#/components/schemas/Error"
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"code", "message", "extra"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            errors = {status: r for status, r in operation["responses"].items() if status.startswith(("4", "5"))}
            # Any request can be refused before its view runs (found by the fuzz: a bad Host).
            assert "400" in errors, (method, path)
            for status, answer in errors.items():
                assert answer["content"]["application/json"]["schema"]["$ref"] == error_ref, (method, path, status)
            if method == "post" and "requestBody" in operation:
                assert "400" in errors and "413" in errors, (method, path)


def test_authenticated_operations_declare_the_bearer_token() -> None:
    schema = Client().get("/api/v1/schema").json()
    assert schema["components"]["securitySchemes"]["deviceToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["deviceToken"]["description"],
    }
    public = {
        ("post", "/api/v1/accounts/register"),
        ("post", "/api/v1/accounts/login"),
        ("post", "/api/v1/accounts/reset-identity"),
        ("get", "/api/v1/users/{username}"),
        # The filesystem backend's media links: the signed token in the URL is the credential.
        ("put", "/api/v1/media/{blob_id}/content"),
        ("get", "/api/v1/media/{blob_id}/content"),
        ("get", "/api/v1/users/{username}/device-list"),
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            has_token = {"deviceToken": []} in operation.get("security", [])
            assert has_token == ((method, path) not in public), (method, path)


@pytest.mark.django_db
def test_swagger_ui_is_served_from_local_static_files() -> None:
    page = Client().get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/api/v1/schema" in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    for asset in assets:
        assert not asset.startswith(("http://", "https://", "//")), f"external asset {asset}"
    bundle = next(a for a in assets if a.endswith("swagger-ui-bundle.js"))
    assert b"".join(Client().get(bundle).streaming_content)[:100]  # type: ignore[attr-defined]


def test_a_host_the_server_does_not_serve_is_a_documented_json_400() -> None:
    response = Client(HTTP_HOST="rK%p$$").get("/api/v1/conversations/00000000-0000-4000-8000-000000000000/keys")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    schema = Client().get("/api/v1/schema").json()
    assert "400" in schema["paths"]["/api/v1/conversations/{conversation_id}/keys"]["get"]["responses"]
