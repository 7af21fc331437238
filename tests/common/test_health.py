from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.test import Client


def test_live_needs_no_database() -> None:
    # No django_db mark: any query would fail the test.
    response = Client().get("/health/live")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_ready_checks_the_database_and_redis_when_configured(settings: Any) -> None:
    response = Client().get("/health/ready")
    assert response.status_code == 200
    expected_redis = "ok" if settings.REDIS_URL else "skipped"
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": expected_redis}}


@pytest.mark.django_db
def test_ready_is_503_when_the_database_fails() -> None:
    with mock.patch("django.db.connection.cursor", side_effect=OperationalError("down")):
        response = Client().get("/health/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["database"] == "failed"


@pytest.mark.django_db
def test_ready_is_503_when_redis_does_not_answer(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = Client().get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "redis": "failed"}
