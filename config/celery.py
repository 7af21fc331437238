"""Celery application.

Broker: `REDIS_URL` when set; otherwise the in-memory transport with eager execution, so a
development machine and the test suite need no broker. No tasks exist yet.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("e2ee")
# Every `CELERY_*` Django setting configures Celery (see config/settings.py).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
