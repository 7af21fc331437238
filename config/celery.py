"""Celery application.

Broker: `REDIS_URL` when set; otherwise the in-memory transport with eager execution, so a
development machine and the test suite need no broker. Tasks live in each app's `tasks.py`
(autodiscovered); `CELERY_BEAT_SCHEDULE` in config/settings.py names the periodic ones. Task outcomes
are counted for /metrics (common.metrics.CELERY_TASKS) through Celery's signals.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import task_failure, task_retry, task_success

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("e2ee")
# Every `CELERY_*` Django setting configures Celery (see config/settings.py).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _count(outcome: str) -> Callable[..., None]:
    def handler(sender: Any = None, **_: Any) -> None:
        from common.metrics import CELERY_TASKS  # not at import: this module loads before Django

        CELERY_TASKS.labels(task=getattr(sender, "name", None) or str(sender), outcome=outcome).inc()

    return handler


# Instrumentation only (no business logic in signals): Celery task outcomes for /metrics.
task_success.connect(_count("success"), weak=False)
task_failure.connect(_count("failure"), weak=False)
task_retry.connect(_count("retry"), weak=False)
