"""Celery tasks of the devices app: thin, each calls one service."""

from __future__ import annotations

from celery import shared_task

from devices.services import link_codes_expire as link_codes_expire_service


@shared_task(name="devices.tasks.link_codes_expire")  # type: ignore[untyped-decorator]  # celery is untyped
def link_codes_expire() -> int:
    """Mark expired link requests (run by Celery beat about every minute)."""
    return link_codes_expire_service()
