"""Malformed input never produces a 500: every answer is JSON, and every refusal carries a code.

For each endpoint that takes a body: a table of raw bodies (not JSON, wrong top-level type,
pathological JSON), then the valid body with every field, nested ones included, replaced in turn
by each value of a garbage table.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from devices.models import Device
from tests.accounts.factories import PASSWORD, UserFactory
from tests.builders import (
    Dev,
    active_devices,
    device_json,
    envelope_json,
    link_approval_json,
    make_conversation,
    make_dev,
    manifest_json,
    register_json,
    wrapped_keys_json,
)
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db

GARBAGE: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    10**300,
    1.5,
    1e308,
    "",
    "x",
    "💥",
    "\ud800",  # lone surrogate: not encodable as UTF-8
    "a\x00b",
    "A" * 10_000,
    [],
    [1, "a"],
    {},
    {"a": {"b": [None]}},
]

RAW_BODIES: list[tuple[str, bytes | str]] = [
    ("application/json", b""),
    ("application/json", b"null"),
    ("application/json", b"[]"),
    ("application/json", b"[1, 2]"),
    ("application/json", b'"string"'),
    ("application/json", b"123"),
    ("application/json", b"true"),
    ("application/json", b"{}"),
    ("application/json", b"{"),
    ("application/json", b'{"a":}'),
    ("application/json", b"NaN"),
    ("application/json", b'{"version": Infinity}'),
    ("application/json", b'{"version": 1e400}'),
    ("application/json", b'{"epoch": ' + b"9" * 5000 + b"}"),
    ("application/json", b"[" * 100_000 + b"]" * 100_000),
    ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("application/json", b"\xff\xfe\x00"),
    ("application/json", b'"\\ud800"'),
    ("application/json; charset=bogus", b"{}"),
    ("application/json; charset=utf-16", b"{}"),
    ("text/plain", b"hello"),
    ("application/x-www-form-urlencoded", b"a=1&b=2"),
    ("multipart/form-data; boundary=xyz", b"--xyz--"),
    ("", b"{}"),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a JSON document (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    mutated = copy.deepcopy(body)
    target = mutated
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return mutated


def _check(response: Any, what: str, *, must_refuse: bool) -> str | None:
    """None if the answer is acceptable, else a description of what is wrong."""
    if response.status_code >= 500:
        return f"{what}: {response.status_code}"
    if must_refuse and not 400 <= response.status_code < 500:
        return f"{what}: expected a 4xx, got {response.status_code}"
    if response.status_code >= 400:
        if not response["Content-Type"].startswith("application/json"):
            return f"{what}: {response.status_code} is not JSON"
        body = response.json()
        if not isinstance(body.get("code"), str) or set(body) != {"code", "message", "extra"}:
            return f"{what}: bad error body {body!r}"
    return None


Endpoint = Callable[[], tuple[APIClient, str, dict[str, Any]]]


def _register() -> tuple[APIClient, str, dict[str, Any]]:
    return APIClient(), "/api/v1/accounts/register", register_json("alice", PASSWORD)


def _login() -> tuple[APIClient, str, dict[str, Any]]:
    UserFactory.create(username="alice")
    return APIClient(), "/api/v1/accounts/login", {"username": "alice", "password": PASSWORD, "device": device_json()}


def _approve() -> tuple[APIClient, str, dict[str, Any]]:
    dev = make_dev()
    pending = DeviceFactory.create(user=dev.user, status=Device.Status.PENDING)
    return dev.client(), f"/api/v1/devices/{pending.id}/link/approve", link_approval_json(dev.device, pending)


def _create_conversation() -> tuple[APIClient, str, dict[str, Any]]:
    alice, bob = make_dev(), make_dev(user=UserFactory.create(username="bob"))
    body = {
        "conversation_id": str(uuid.uuid4()),
        "kind": "group",
        "members": ["bob"],
        "epoch": {
            "number": 1,
            "wrapped_keys": wrapped_keys_json(active_devices(alice.user, bob.user)),
            **manifest_json(),
        },
    }
    return alice.client(), "/api/v1/conversations", body


def _epoch(dev: Dev | None = None) -> tuple[APIClient, str, dict[str, Any]]:
    alice = dev or make_dev()
    conversation = make_conversation(alice)
    body = {"number": 2, "wrapped_keys": wrapped_keys_json(active_devices(alice.user)), **manifest_json()}
    return alice.client(), f"/api/v1/conversations/{conversation.pk}/epochs", body


def _message() -> tuple[APIClient, str, dict[str, Any]]:
    alice = make_dev()
    conversation = make_conversation(alice)
    return alice.client(), f"/api/v1/conversations/{conversation.pk}/messages", envelope_json(alice)


ENDPOINTS: dict[str, Endpoint] = {
    "register": _register,
    "login": _login,
    "link_approve": _approve,
    "create_conversation": _create_conversation,
    "epoch_upload": _epoch,
    "send_message": _message,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_raw_malformed_bodies_are_refused_with_a_json_code(endpoint: str) -> None:
    client, url, _ = ENDPOINTS[endpoint]()
    problems = [
        _check(
            # The DRF stubs type `data` as str; Django's RequestFactory.generic encodes str and passes bytes through.
            client.generic("POST", url, raw, content_type=content_type),  # type: ignore[arg-type]
            f"{content_type} {raw[:40]!r}",
            must_refuse=True,
        )
        for content_type, raw in RAW_BODIES
    ]
    assert [p for p in problems if p] == []


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_field_replaced_by_garbage_never_500s(endpoint: str) -> None:
    client, url, body = ENDPOINTS[endpoint]()
    problems = []
    for path in _paths(body):
        for value in GARBAGE:
            mutated = _replaced(body, path, value)
            # Serialised by hand: json.dumps keeps the lone surrogate as a \ud800 escape.
            response = client.generic("POST", url, json.dumps(mutated), content_type="application/json")
            problems.append(_check(response, f"{'.'.join(map(str, path))}={str(value)[:20]!r}", must_refuse=False))
    assert [p for p in problems if p] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/conversations/not-a-uuid/messages",
        "/api/v1/conversations/6F1C0A0E-4C1E-4A8E-9D55-0B7B8C0F1E2A",
        "/api/v1/devices/%00/link/approve",
        "/api/v1/users/%ED%A0%80",
        "/api/v1/users/" + "a" * 5000,
        "/api/v1/conversations/6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a/keys/more",
    ],
)
def test_garbage_paths_and_queries_are_json_4xx(path: str) -> None:
    dev = make_dev()
    problem = _check(dev.client().get(path), path, must_refuse=True)
    assert problem is None


@pytest.mark.parametrize(
    "query",
    ["limit=%00", "after=%ED%A0%80", "after=1&after=x", "limit=1e2", "after=--1", "limit=" + "9" * 2000],
)
def test_garbage_history_queries_are_json_4xx(query: str) -> None:
    alice = make_dev()
    conversation = make_conversation(alice)
    url = f"/api/v1/conversations/{conversation.pk}/messages?{query}"
    assert _check(alice.client().get(url), query, must_refuse=True) is None


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_body_above_the_request_limit_is_413_request_too_large(endpoint: str, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    client, url, body = ENDPOINTS[endpoint]()
    padded = json.dumps({**body, "padding": "x" * (64 * 1024)})

    response = client.generic("POST", url, padded, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "code": "request_too_large",
        "message": "The request body is too large.",
        "extra": {"max_bytes": 64 * 1024},
    }
