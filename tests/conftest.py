"""Fixtures for the server suite (the root conftest.py belongs to the lead)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from common.testing import PublishedEvent, capture_published_events
from conversations.models import Conversation
from tests.builders import Dev, make_conversation, make_dev

# Tests of the pure layers: the SDK (tests/client) and these modules. Those among them that use no
# database are marked `nodb`; CI runs them in one leg only (`-m "not nodb"` in the other), since
# PostgreSQL and Redis cannot change their outcome.
PURE_MODULES = (
    "tests/client/",
    "tests/test_layering.py",
    "tests/messaging/test_frames.py",
    "tests/fuzz/test_frames_strategy.py",
    "tests/common/test_fields.py",
)
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "django_db_setup",
    "live_server",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        pure = item.nodeid.startswith(PURE_MODULES)
        uses_database = item.get_closest_marker("django_db") is not None or bool(
            DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        if pure and not uses_database:
            item.add_marker(pytest.mark.nodb)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The real hasher costs ~0.5 s per call by design; the tests are not about hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_rate_limit_counters(settings: Any) -> None:
    # Counters of one test never count against another (no cache flush: Redis is shared).
    settings.E2EE_RATE_LIMIT_PREFIX = f"rl-test-{uuid.uuid4().hex}"


@pytest.fixture
def alice() -> Dev:
    """An active device of a fresh account, with an API client authenticated as it."""
    return make_dev()


@pytest.fixture
def bob() -> Dev:
    return make_dev()


@pytest.fixture
def conversation(alice: Dev, bob: Dev) -> Conversation:
    """A group of alice and bob with epoch 1 wrapped for their devices (modules may override)."""
    return make_conversation(alice, bob.user)


@pytest.fixture
def api() -> APIClient:
    """An anonymous API client."""
    return APIClient()


@pytest.fixture
def published() -> Iterator[list[PublishedEvent]]:
    """What the realtime helper delivers after commit; pair with
    `django_capture_on_commit_callbacks(execute=True)` outside `transaction=True` tests."""
    with capture_published_events() as events:
        yield events
