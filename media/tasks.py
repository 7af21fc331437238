"""Periodic media work (thin: the service does it). The beat schedule is in config/celery.py."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from media.services import media_orphans_prune


@shared_task(name="media.tasks.prune_orphan_media")  # type: ignore[untyped-decorator]
def prune_orphan_media() -> int:
    """Delete uploads no message referenced within `E2EE_MEDIA_ORPHAN_AGE_S`; the count."""
    return len(media_orphans_prune(older_than=timedelta(seconds=int(settings.E2EE_MEDIA_ORPHAN_AGE_S))))
