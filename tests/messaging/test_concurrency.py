"""Concurrent senders into one conversation, each thread on its own database connection.

Runs on PostgreSQL (row locks) and on SQLite (IMMEDIATE transactions serialise writers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.db import connections

from conversations.models import Conversation
from messaging.models import Message
from tests.builders import Dev, envelope_json, make_conversation, make_dev

THREADS = 32
MESSAGES_PER_THREAD = 4

T = TypeVar("T")


def _run_concurrently(jobs: list[Callable[[], T]]) -> list[T]:
    """Start every job at the same moment, each in its own thread and DB connection."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T:
        try:
            barrier.wait(timeout=30)
            return job()
        finally:
            connections.close_all()  # this thread's connections; the test DB is dropped later

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_get_gap_free_sequence_and_idempotent_resends() -> None:
    senders = [make_dev() for _ in range(8)]
    conversation = make_conversation(senders[0], *(s.user for s in senders[1:]))
    url = f"/api/v1/conversations/{conversation.pk}/messages"
    # 32 threads, four per device, each sending several envelopes in a row.
    bodies: list[tuple[Dev, list[dict[str, Any]]]] = [
        (senders[i % len(senders)], [envelope_json(senders[i % len(senders)]) for _ in range(MESSAGES_PER_THREAD)])
        for i in range(THREADS)
    ]

    def sender(dev: Dev, envelopes: list[dict[str, Any]]) -> Callable[[], list[tuple[int, int]]]:
        def send_all() -> list[tuple[int, int]]:
            client = dev.client()
            results = []
            for body in envelopes:
                response = client.post(url, body, format="json")
                results.append((response.status_code, response.json().get("seq")))
            return results

        return send_all

    first = _run_concurrently([sender(dev, envelopes) for dev, envelopes in bodies])

    total = THREADS * MESSAGES_PER_THREAD
    assert {status for results in first for status, _ in results} == {201}
    seqs = sorted(seq for results in first for _, seq in results)
    assert seqs == list(range(1, total + 1))  # no gaps, no duplicates
    stored = list(Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True))
    assert stored == list(range(1, total + 1))
    assert Conversation.objects.get(pk=conversation.pk).last_seq == total

    # Every resend, all at once, answers 200 with the number first given; nothing new is stored.
    again = _run_concurrently([sender(dev, envelopes) for dev, envelopes in bodies])

    assert {status for results in again for status, _ in results} == {200}
    assert [[seq for _, seq in results] for results in again] == [[seq for _, seq in results] for results in first]
    assert Message.objects.filter(conversation=conversation).count() == total
