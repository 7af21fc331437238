from __future__ import annotations

import json
import logging

import pytest

from common.logs import JsonLineFormatter
from tests.builders import make_dev


def test_formatter_writes_one_json_object_with_fields() -> None:
    record = logging.LogRecord("e2ee.request", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"method": "GET", "status": 200}
    line = JsonLineFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "request"
    assert parsed["level"] == "INFO"
    assert parsed["method"] == "GET"
    assert parsed["status"] == 200


@pytest.mark.django_db
def test_each_request_is_logged_with_device_and_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    dev = make_dev()
    with caplog.at_level(logging.INFO, logger="e2ee.request"):
        response = dev.client().get("/api/v1/accounts/me")
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "e2ee.request"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["method"] == "GET"
    assert fields["path"] == "/api/v1/accounts/me"
    assert fields["status"] == 200
    assert fields["device_id"] == str(dev.device.id)
    assert isinstance(fields["duration_ms"], float)
    formatted = JsonLineFormatter().format(record)
    assert dev.token not in formatted
    assert dev.token not in caplog.text


@pytest.mark.django_db
def test_anonymous_request_is_logged_without_device(api: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="e2ee.request"):
        api.get("/api/v1/users/nobody")  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if r.name == "e2ee.request"]
    assert record.fields["status"] == 404  # type: ignore[attr-defined]
    assert record.fields["device_id"] is None  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_request_id_is_generated_echoed_and_logged(api: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="e2ee.request"):
        response = api.get("/api/v1/users/nobody")  # type: ignore[attr-defined]
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    [record] = [r for r in caplog.records if r.name == "e2ee.request"]
    assert record.fields["request_id"] == request_id  # type: ignore[attr-defined]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("3f1c2b9e-0d4a-4c51-9a0e-5b7f3e2a1c00", True),
        ("abc", False),  # too short
        ("x" * 129, False),  # too long
        ('evil"}\n{"forged": 1', False),
        ("with space 12345", False),
    ],
)
def test_client_request_id_kept_only_when_well_formed(api: object, given: str, kept: bool) -> None:
    response = api.get("/health/live", HTTP_X_REQUEST_ID=given)  # type: ignore[attr-defined]
    assert (response["X-Request-ID"] == given) is kept


def test_every_log_line_written_during_a_request_carries_its_id() -> None:
    from common.logs import current_request_id

    record = logging.LogRecord("e2ee.any", logging.WARNING, __file__, 1, "something", None, None)
    reset = current_request_id.set("req-12345678")
    try:
        line = json.loads(JsonLineFormatter().format(record))
    finally:
        current_request_id.reset(reset)
    assert line["request_id"] == "req-12345678"
    assert "request_id" not in json.loads(JsonLineFormatter().format(record))
