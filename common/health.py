"""Liveness and readiness for orchestrators and load balancers (docs/operations.md).

`/health/live`: the process answers HTTP (no database, no Redis: a failing database must not get
every server process restarted). `/health/ready`: the database answers `SELECT 1` and, when
`REDIS_URL` is set, Redis answers PING; 503 otherwise, so the load balancer stops sending traffic.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

_TIMEOUT_S = 2.0


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("readiness: database check failed", extra={"fields": {"error": type(exc).__name__}})
        return "failed"
    return "ok"


def _check_redis() -> str:
    if not settings.REDIS_URL:
        return "skipped"
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        logger.warning("readiness: redis check failed", extra={"fields": {"error": type(exc).__name__}})
        return "failed"
    return "ok"


def live_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def ready_view(request: HttpRequest) -> JsonResponse:
    checks: dict[str, Any] = {"database": _check_database(), "redis": _check_redis()}
    ready = all(result in ("ok", "skipped") for result in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
