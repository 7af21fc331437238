"""Suite-wide guard: when CI asks for the real services, their absence is a failure, not a skip.

`E2EE_REQUIRE_SERVICES=1` (set by `.ci/run`) means: the database must be PostgreSQL and reachable,
and `REDIS_URL` must point at a Redis that answers. Without it the suite runs on the embedded
defaults (SQLite, in-memory channel layer).
"""

from __future__ import annotations

import os

import pytest

# Live daphne processes for WebSocket tests, available to every test module.
pytest_plugins = ["tests.integration.daphne"]


def _services_problems() -> list[str]:
    problems: list[str] = []
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        problems.append(f"DATABASE_URL does not name PostgreSQL (engine is {engine})")
    else:
        import psycopg

        db = settings.DATABASES["default"]
        try:
            psycopg.connect(
                host=db.get("HOST") or None,
                port=db.get("PORT") or None,
                user=db.get("USER") or None,
                password=db.get("PASSWORD") or None,
                dbname="postgres",
                connect_timeout=5,
            ).close()
        except psycopg.Error as exc:
            problems.append(f"PostgreSQL is not reachable: {exc}")
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        problems.append("REDIS_URL is not set")
    else:
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis is not reachable at {redis_url}: {exc}")
    return problems


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("E2EE_REQUIRE_SERVICES") != "1":
        return
    problems = _services_problems()
    if problems:
        pytest.exit("E2EE_REQUIRE_SERVICES=1 but: " + "; ".join(problems), returncode=3)
