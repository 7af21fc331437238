"""Celery application.

Broker: `REDIS_URL` when set; otherwise the in-memory transport with eager execution, so a
development machine and the test suite need no broker. Tasks live in each app's `tasks.py`
(autodiscovered); `CELERY_BEAT_SCHEDULE` in config/settings.py names the periodic ones. Task outcomes
are counted for /metrics (common.metrics.CELERY_TASKS) through Celery's signals.

Workers run `BrokerLossTolerantConsumer` (CELERY_WORKER_CONSUMER in config/settings.py): Celery's own
consumer, which survives every broker restart but one race (issue 13, F9).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import task_failure, task_retry, task_success
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)


class BrokerLossTolerantConsumer(Consumer):  # type: ignore[misc]  # celery is untyped
    """Celery's consumer, minus one way a broker restart ends the worker process.

    When the broker connection breaks, Celery 5.7 first `collect()`s the connection, then
    closes it. If the first pass dies on a connection error halfway through closing the channel
    (the broker still down) and the broker is back for the second, kombu's Redis channel, now
    holding a transport without a client, tries to give back its unacknowledged messages and
    raises `AttributeError: 'NoneType' object has no attribute 'hostname'` in `_connparams`.
    Celery ignores only connection errors there: the worker logged "Unrecoverable error" and
    exited (the fault run: once in 11 Redis restarts; a loaded worker here: once in 29). The
    connection is already dropped by then, so the worker carries on and reconnects; the
    unacknowledged messages come back from Redis after the visibility timeout (every task is
    idempotent), and overdue wake-ups sooner through the notification sweep.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        had_connection = self.connection is not None
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            if not had_connection or self.connection is not None:
                raise  # not from closing the lost connection: a real bug
            logger.warning("broker connection lost; its channel could not be closed cleanly", exc_info=True)


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
