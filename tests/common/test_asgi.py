from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from config.asgi import application


def _get(path: str, host: bytes) -> tuple[int, dict[str, object]]:
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", host)])
    response = async_to_sync(communicator.get_response)()
    return response["status"], json.loads(response["body"])


def test_asgi_application_serves_the_api_over_http() -> None:
    status, body = _get("/api/v1/no-such-endpoint", b"testserver")
    assert (status, body["code"]) == (404, "not_found")


def test_refused_host_header_is_json_for_the_api() -> None:
    status, body = _get("/api/v1/accounts/me", b"evil.example")
    assert (status, body["code"]) == (400, "invalid_request")
