"""/metrics: access control, and exact counts of a scripted scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from conversations.models import Conversation
from tests.builders import Dev, envelope_json

pytestmark = pytest.mark.django_db

MESSAGES_URL = "/api/v1/conversations/{}/messages"


def scrape(client: Client | None = None, **headers: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_ten_messages_sent_count_exactly_ten(
    alice: Dev, conversation: Conversation, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    client = alice.client()
    url = MESSAGES_URL.format(conversation.pk)
    before = scrape()
    bodies = [envelope_json(alice) for _ in range(10)]
    for body in bodies:
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(url, body, format="json").status_code == 201
    for body in bodies[:3]:  # idempotent resends are not new messages
        assert client.post(url, body, format="json").status_code == 200
    assert client.post(url, envelope_json(alice, epoch=7), format="json").status_code == 409
    after = scrape()

    assert (
        value(after, "e2ee_messages_sent_total", transport="rest")
        - value(before, "e2ee_messages_sent_total", transport="rest")
        == 10
    )
    route = "/api/v1/conversations/<uuid:conversation_id>/messages"
    for status, count in (("201", 10), ("200", 3), ("409", 1)):
        key = {"method": "POST", "route": route, "status": status}
        assert (
            value(after, "e2ee_http_requests_total", **key) - value(before, "e2ee_http_requests_total", **key) == count
        )
    # Each stored message was handed to the channel layer once, after commit.
    assert value(after, "e2ee_fanout_latency_seconds_count") - value(before, "e2ee_fanout_latency_seconds_count") == 10


def test_every_documented_metric_is_exposed() -> None:
    from common import metrics

    metrics.CONNECTED_DEVICES.set(0)
    metrics.WS_CONNECTIONS.labels(outcome="accepted")
    text = Client().get("/metrics").content.decode()
    for name in (
        "e2ee_http_requests_total",
        "e2ee_http_request_duration_seconds",
        "e2ee_messages_sent_total",
        "e2ee_fanout_latency_seconds",
        "e2ee_delivery_latency_seconds",
        "e2ee_catchup_messages",
        "e2ee_websocket_connections_total",
        "e2ee_websocket_frames_total",
        "e2ee_connected_devices",
        "e2ee_celery_tasks_total",
        "e2ee_rate_limited_total",
    ):
        assert f"# TYPE {name} " in text


def test_a_rate_limited_request_is_counted(alice: Dev, conversation: Conversation, settings: Any) -> None:
    settings.E2EE_RATE_LIMITS = {**settings.E2EE_RATE_LIMITS, "send_device": "1/3600"}
    before = value(scrape(), "e2ee_rate_limited_total", limit="send_device")
    client = alice.client()
    url = MESSAGES_URL.format(conversation.pk)
    client.post(url, envelope_json(alice), format="json")
    assert client.post(url, envelope_json(alice), format="json").status_code == 429
    assert value(scrape(), "e2ee_rate_limited_total", limit="send_device") - before == 1


def test_celery_task_outcomes_are_counted() -> None:
    from config.celery import app

    @app.task(name="tests.metrics_ok")
    def ok() -> int:
        return 1

    @app.task(name="tests.metrics_fails")
    def fails() -> None:
        raise RuntimeError("boom")

    def count(task: str, outcome: str) -> float:
        return value(scrape(), "e2ee_celery_tasks_total", task=task, outcome=outcome)

    before_ok, before_failed = count("tests.metrics_ok", "success"), count("tests.metrics_fails", "failure")
    # apply(): run here, whatever the broker (CI has Redis and no worker), with Celery's signals.
    ok.apply()
    ok.apply()
    fails.apply(throw=False)
    assert count("tests.metrics_ok", "success") - before_ok == 2
    assert count("tests.metrics_fails", "failure") - before_failed == 1


def test_metrics_refused_from_other_networks_without_token() -> None:
    response = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")
    assert response.status_code == 404
    assert b"e2ee" not in response.content


@override_settings(E2EE_METRICS_TOKEN="s3cret-metrics-token", E2EE_METRICS_ALLOWED_NETWORKS=[])
def test_metrics_with_token_only() -> None:
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    scrape(Client(REMOTE_ADDR="203.0.113.9"), HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")


@override_settings(E2EE_METRICS_ALLOWED_NETWORKS=["10.1.0.0/16"])
def test_metrics_from_an_allowed_network() -> None:
    scrape(Client(REMOTE_ADDR="10.1.2.3"))
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 404
