"""Prometheus metrics: every metric object of the server, the request counter middleware and the
`/metrics` exposition view (docs/operations.md explains each metric).

Import the objects from here wherever something happens (`from common.metrics import
WS_FRAMES`), or call the small functions for the common cases (`messages_sent_inc`). Labels are
bounded sets (route patterns, never raw paths or ids).

Several server processes (daphne workers, Celery): set `PROMETHEUS_MULTIPROC_DIR` to an empty
directory, the same for every process of one host, emptied before they start. Each process then
writes its values there and `/metrics` sums them (gauges: `livesum`, only live processes count).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotFound
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from common.ratelimit import client_ip

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# --- HTTP ----------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "e2ee_http_requests_total",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "e2ee_http_request_duration_seconds",
    "Time from request to response, by method and route pattern.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
RATE_LIMITED = Counter("e2ee_rate_limited_total", "Requests or frames refused by a rate limit.", ["limit"])

# --- Messages --------------------------------------------------------------------------------------
MESSAGES_SENT = Counter(
    "e2ee_messages_sent_total",
    "Messages stored (idempotent resends not counted), by transport (rest, websocket).",
    ["transport"],
)
FANOUT_LATENCY = Histogram(
    "e2ee_fanout_latency_seconds",
    "Time to hand one event to the channel layer for every recipient device group (after commit).",
    buckets=_LATENCY_BUCKETS,
)
DELIVERY_LATENCY = Histogram(
    "e2ee_delivery_latency_seconds",
    "End to end: from a message being stored to a recipient device acknowledging it.",
    buckets=_LATENCY_BUCKETS,
)
CATCHUP_SIZE = Histogram(
    "e2ee_catchup_messages",
    "Messages pushed to one connection during its catch-up after connecting.",
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
)

# --- WebSocket (incremented by the realtime gateway) ------------------------------------------------
WS_CONNECTIONS = Counter(
    "e2ee_websocket_connections_total",
    "WebSocket connections, by outcome (accepted, refused, closed).",
    ["outcome"],
)
WS_FRAMES = Counter(
    "e2ee_websocket_frames_total",
    "WebSocket frames, by direction (in, out) and frame type (unknown types counted as 'invalid').",
    ["direction", "type"],
)
CONNECTED_DEVICES = Gauge(
    "e2ee_connected_devices",
    "Authenticated WebSocket connections open now (one device may hold several).",
    multiprocess_mode="livesum",
)

# --- Celery ----------------------------------------------------------------------------------------
CELERY_TASKS = Counter(
    "e2ee_celery_tasks_total",
    "Celery tasks finished, by task name and outcome (success, failure, retry).",
    ["task", "outcome"],
)


def messages_sent_inc(n: int = 1, *, transport: str = "rest") -> None:
    """Count `n` newly stored messages (call after commit; not for idempotent resends)."""
    MESSAGES_SENT.labels(transport=transport).inc(n)


def rate_limited_inc(limit: str) -> None:
    RATE_LIMITED.labels(limit=limit).inc()


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    return f"/{route}" if route else "unmatched"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route pattern (`/api/v1/conversations/<uuid:...>`)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        route = _route(request)
        method = request.method if request.method in _METHODS else "OTHER"
        HTTP_REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
        HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(time.perf_counter() - started)
        return response


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _metrics_allowed(request: HttpRequest) -> bool:
    token = settings.E2EE_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.E2EE_METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics` in Prometheus' text format; 404 to anyone not allowed (nothing revealed)."""
    if request.method != "GET" or not _metrics_allowed(request):
        return HttpResponseNotFound(b"", content_type="text/plain")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
