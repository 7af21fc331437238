"""Notifications tests run their background tasks eagerly (the embedded default), even when
REDIS_URL is set: the real worker is exercised by tests/integration/test_notifications_worker.py.
The window buffer's flusher thread does not run here: tests flush it themselves (helpers.send), so
every delivery has happened, in the test's thread, when the step returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from config.celery import app as celery_app
from notifications import services


@pytest.fixture(autouse=True)
def _notifications_eager(settings: Any) -> Iterator[None]:
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = True
    settings.E2EE_NOTIFY_RETRY_BASE_S = 0.01
    settings.E2EE_NOTIFY_HTTP_TIMEOUT_S = 2.0
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    with mock.patch.object(services.window_buffer, "_run", lambda: None):
        yield
        services.window_buffer.flush()  # nothing buffered leaks into the next test
    celery_app.conf.task_always_eager = before
