"""Concurrent upload slots of one account never reserve past its quota (a lock on the user row on
PostgreSQL; SQLite's IMMEDIATE transactions serialise writers)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections

from media import selectors, services
from media.models import MediaBlob
from tests.builders import make_dev
from tests.media.helpers import slot

THREADS = 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_slots_stay_within_the_quota(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.E2EE_MEDIA_QUOTA_BYTES = 3 * 1000
    used = selectors.media_bytes_used

    def slow_sum(*, user_id: int) -> int:
        total = used(user_id=user_id)
        time.sleep(0.05)  # widen the read-then-insert window: without the lock all 8 would fit
        return total

    monkeypatch.setattr(services, "media_bytes_used", slow_sum)
    dev = make_dev()
    barrier = threading.Barrier(THREADS)

    def reserve() -> int:
        try:
            barrier.wait(timeout=30)
            return int(slot(dev, 1000).status_code)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        statuses = list(pool.map(lambda _: reserve(), range(THREADS)))
    assert sorted(statuses) == [201] * 3 + [409] * (THREADS - 3)
    assert MediaBlob.objects.filter(uploader=dev.user).count() == 3
