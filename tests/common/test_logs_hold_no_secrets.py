"""A whole REST scenario at DEBUG level: no log line holds a token, a key, a signature, a wrapped
key or a ciphertext, in base64 (any alignment), hex or raw form."""

from __future__ import annotations

import base64
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from common.logs import JsonLineFormatter
from devices.models import Device
from tests.builders import b64, device_json, link_approval_json, register_json

pytestmark = pytest.mark.django_db


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(JsonLineFormatter().format(record))
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def every_log_line() -> Iterator[_Capture]:
    capture = _Capture()
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    yield capture
    for lg, level in saved:
        lg.removeHandler(capture)
        lg.setLevel(level)


def _forms(secret: bytes) -> list[bytes]:
    forms = [secret, secret.hex().encode()]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + secret)
            start = (shift * 4 + 2) // 3 + 1
            forms.append(encoded[start : start + max(8, len(secret) * 4 // 3 - 4)])
    return forms


def _collect(secrets: list[bytes], body: Any) -> None:
    """Every base64 value of at least 12 bytes in a request or response body is a secret here."""
    if isinstance(body, dict):
        for value in body.values():
            _collect(secrets, value)
    elif isinstance(body, list):
        for value in body:
            _collect(secrets, value)
    elif isinstance(body, str) and len(body) >= 16:
        try:
            secrets.append(base64.b64decode(body, validate=True))
        except ValueError:
            pass


def test_a_full_scenario_logs_no_token_key_or_ciphertext(
    every_log_line: _Capture, capfd: pytest.CaptureFixture[str], settings: Any
) -> None:
    settings.E2EE_RATE_LIMITS = {**settings.E2EE_RATE_LIMITS, "send_device": "2/3600"}
    secrets: list[bytes] = []
    tokens: list[str] = []

    def call(client: APIClient, method: str, url: str, body: Any = None) -> Any:
        if body is not None:
            _collect(secrets, body)
        response = (
            getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)
        )
        if response.get("Content-Type", "").startswith("application/json") and response.content:
            payload = response.json()
            _collect(secrets, payload)
            if isinstance(payload, dict) and "token" in payload:
                tokens.append(payload["token"])
        return response

    anon = APIClient()
    password = "a long enough password 42"
    alice_body = register_json("alice_logs", password)
    assert call(anon, "post", "/api/v1/accounts/register", alice_body).status_code == 201
    bob_body = register_json("bob_logs", password)
    assert call(anon, "post", "/api/v1/accounts/register", bob_body).status_code == 201
    alice, bob = APIClient(), APIClient()
    alice.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[0]}")
    bob.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[1]}")

    phone_device = device_json()
    assert (
        call(
            anon,
            "post",
            "/api/v1/accounts/login",
            {"username": "alice_logs", "password": password, "device": phone_device},
        ).status_code
        == 201
    )
    phone = APIClient()
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[2]}")
    call(
        anon,
        "post",
        "/api/v1/accounts/login",
        {"username": "alice_logs", "password": "wrong " + password, "device": device_json()},
    )
    approval = link_approval_json(
        Device.objects.get(pk=alice_body["device"]["device_id"]), Device.objects.get(pk=phone_device["device_id"])
    )
    vouch = call(alice, "post", f"/api/v1/devices/{phone_device['device_id']}/link/approve", approval)
    assert vouch.status_code == 200

    devices = [alice_body["device"]["device_id"], phone_device["device_id"], bob_body["device"]["device_id"]]
    conversation_id = str(uuid.uuid4())
    keys = [{"device_id": d, "wrapped_key": b64(os.urandom(80)), "signature": b64(os.urandom(64))} for d in devices]
    created = call(
        alice,
        "post",
        "/api/v1/conversations",
        {
            "conversation_id": conversation_id,
            "kind": "direct",
            "members": ["bob_logs"],
            "epoch": {
                "number": 1,
                "wrapped_keys": keys,
                "manifest": b64(os.urandom(120)),
                "manifest_signature": b64(os.urandom(64)),
            },
        },
    )
    assert created.status_code == 201
    for sender, device_id in ((alice, devices[0]), (bob, devices[2]), (alice, devices[0]), (alice, devices[0])):
        envelope = {
            "version": 1,
            "epoch": 1,
            "sender_device_id": device_id,
            "client_message_id": b64(os.urandom(16)),
            "nonce": b64(os.urandom(12)),
            "ciphertext": b64(os.urandom(200)),
            "signature": b64(os.urandom(64)),
        }
        call(sender, "post", f"/api/v1/conversations/{conversation_id}/messages", envelope)
    call(alice, "post", f"/api/v1/conversations/{conversation_id}/messages", {"ciphertext": b64(os.urandom(90))})
    call(bob, "get", f"/api/v1/conversations/{conversation_id}/messages?after=0")
    call(phone, "get", f"/api/v1/conversations/{conversation_id}/keys")
    call(alice, "get", "/api/v1/devices")
    assert call(alice, "post", f"/api/v1/devices/{devices[1]}/revoke").status_code == 200
    assert call(phone, "get", "/api/v1/accounts/me").status_code == 401
    call(bob, "post", "/api/v1/accounts/logout")
    call(bob, "get", "/api/v1/accounts/me")

    out, err = capfd.readouterr()
    logs = ("\n".join(every_log_line.lines) + out + err).encode()
    assert b"e2ee.request" in logs  # the capture really saw the request lines
    assert len(tokens) == 3 and len(secrets) > 30
    for token in tokens:
        assert token.encode() not in logs
    for secret in secrets:
        for form in _forms(secret):
            assert form not in logs, f"{secret.hex()[:16]}... found in a log line"
