"""Every rate limit trips at its setting, answers 429 with Retry-After, and resets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from common.ratelimit import LocalRateLimit, RateLimitedError, aratelimit_hit, client_ip, ratelimit_hit
from devices.models import Device
from tests.accounts.factories import PASSWORD, UserFactory
from tests.builders import (
    Dev,
    b64,
    device_json,
    envelope_json,
    make_dev,
    manifest_json,
    register_json,
    wrapped_keys_json,
)

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0  # a multiple of 60 and of 10: the start of a window


def limits(**overrides: str) -> Any:
    from django.conf import settings

    return override_settings(E2EE_RATE_LIMITS={**settings.E2EE_RATE_LIMITS, **overrides})


@pytest.fixture
def clock() -> Any:
    """Freeze the limiter's clock at T0; `clock.now` moves it."""
    state = {"now": T0}
    with mock.patch("common.ratelimit._now", lambda: state["now"]):
        yield state


def test_counter_trips_after_count_and_resets_in_the_next_window() -> None:
    with limits(send_device="3/10"):
        for _ in range(3):
            ratelimit_hit("send_device", "k", now=T0 + 1)
        with pytest.raises(RateLimitedError) as raised:
            ratelimit_hit("send_device", "k", now=T0 + 2.5)
        assert raised.value.retry_after_s == 8  # ceil(T0 + 10 - (T0 + 2.5))
        ratelimit_hit("send_device", "other key", now=T0 + 3)  # keys are independent
        ratelimit_hit("send_device", "k", now=T0 + 10)  # the next window


def test_async_variant_counts_in_the_same_counter() -> None:
    with limits(ws_frame="2/60"):
        asyncio.run(aratelimit_hit("ws_frame", "conn", now=T0))
        ratelimit_hit("ws_frame", "conn", now=T0)
        with pytest.raises(RateLimitedError):
            asyncio.run(aratelimit_hit("ws_frame", "conn", now=T0))


def test_disabled_limits_never_trip() -> None:
    with limits(send_device="1/60"), override_settings(E2EE_RATE_LIMIT_ENABLED=False):
        for _ in range(5):
            ratelimit_hit("send_device", "k")


def test_client_ip_uses_forwarded_for_only_behind_trusted_proxies() -> None:
    request = mock.Mock(META={"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.2.3.4"})
    assert client_ip(request) == "10.0.0.1"
    with override_settings(E2EE_TRUSTED_PROXY_HOPS=1):
        assert client_ip(request) == "1.2.3.4"
    with override_settings(E2EE_TRUSTED_PROXY_HOPS=3):
        assert client_ip(request) == "10.0.0.1"


def _assert_limited(response: Any, retry_after: int) -> None:
    assert response.status_code == 429, response.content
    assert response.json() == {
        "code": "rate_limited",
        "message": "Too many requests; retry later.",
        "extra": {"retry_after_s": retry_after},
    }
    assert response["Retry-After"] == str(retry_after)


def _trip(call: Callable[[], Any], count: int, clock: dict[str, float], ok: set[int]) -> None:
    """`count` calls pass (any status in `ok`), the next is 429, and a new window passes again."""
    clock["now"] = T0 + 20
    for _ in range(count):
        assert call().status_code in ok
    _assert_limited(call(), 40)
    clock["now"] = T0 + 60
    assert call().status_code in ok


def test_login_per_ip(clock: dict[str, float]) -> None:
    api = APIClient()
    with limits(login_ip="3/60"):
        _trip(
            lambda: api.post(
                "/api/v1/accounts/login",
                {"username": f"u{os.urandom(4).hex()}", "password": "x", "device": device_json()},
                format="json",
            ),
            3,
            clock,
            {401},
        )


def test_login_per_account_from_many_addresses(clock: dict[str, float]) -> None:
    user = UserFactory.create()
    addresses = iter(f"192.0.2.{i}" for i in range(1, 200))
    with limits(login_account="4/60"):
        _trip(
            lambda: APIClient(REMOTE_ADDR=next(addresses)).post(
                "/api/v1/accounts/login",
                {"username": user.username, "password": PASSWORD, "device": device_json()},
                format="json",
            ),
            4,
            clock,
            {201},
        )


def test_registration_per_ip(clock: dict[str, float]) -> None:
    api = APIClient()
    with limits(register_ip="2/60"):
        _trip(
            lambda: api.post(
                "/api/v1/accounts/register",
                register_json(f"u{os.urandom(4).hex()}", "a long enough password 42"),
                format="json",
            ),
            2,
            clock,
            {201},
        )


def test_sends_per_device(clock: dict[str, float], alice: Dev, conversation: Any) -> None:
    client = alice.client()
    url = f"/api/v1/conversations/{conversation.pk}/messages"
    with limits(send_device="5/60"):
        _trip(lambda: client.post(url, envelope_json(alice), format="json"), 5, clock, {201})
        # Another device of the same account has its own budget.
        phone = make_dev(user=alice.user)
        assert phone.client().post(url, envelope_json(phone), format="json").status_code in (201, 409)


def test_link_attempts_per_account(clock: dict[str, float]) -> None:
    dev = make_dev()
    client = dev.client()
    with limits(link_account="2/60"):
        _trip(
            lambda: client.post(
                f"/api/v1/devices/{make_dev(user=dev.user, status=Device.Status.PENDING).device.id}/revoke",
                {},
                format="json",
            ),
            2,
            clock,
            {200},
        )


def test_uploads_per_device(clock: dict[str, float], alice: Dev, bob: Dev, conversation: Any) -> None:
    client = alice.client()
    epoch = {"n": 1}

    def upload() -> Any:
        response = client.post(
            f"/api/v1/conversations/{conversation.pk}/epochs",
            {
                "number": epoch["n"] + 1,
                "wrapped_keys": wrapped_keys_json([alice.device, bob.device]),
                **manifest_json(),
            },
            format="json",
        )
        if response.status_code == 201:
            epoch["n"] += 1
        return response

    with limits(upload_device="3/60"):
        _trip(upload, 3, clock, {201})


def test_local_limit_trips_at_its_setting_and_resets_with_the_window() -> None:
    now = {"t": 100.0}
    with limits(ws_frame="3/10"):
        frames = LocalRateLimit("ws_frame", clock=lambda: now["t"])
        for _ in range(3):
            frames.hit()
        now["t"] = 107.5
        with pytest.raises(RateLimitedError) as raised:
            frames.hit()
        assert raised.value.retry_after_s == 3
        now["t"] = 110.0
        frames.hit()


def _wrong_approval(approver: Dev, pending: Device) -> Any:
    """An approval with a made-up verifier: refused whatever else it says (403, or 404 when the
    pending device opened no link request), and counted by the limits before anything else."""
    return approver.client().post(
        f"/api/v1/devices/{pending.id}/link/approve",
        {
            "verifier": b64(os.urandom(32)),
            "vouch_signature": b64(os.urandom(64)),
            "device_list": {},
            "wrapped_identity_key": b64(os.urandom(80)),
            "approval_mac": b64(os.urandom(32)),
        },
        format="json",
    )


def test_link_code_attempts_per_pending_device(clock: dict[str, float]) -> None:
    approver = make_dev()
    pending = make_dev(user=approver.user, status=Device.Status.PENDING)
    with limits(link_code_device="4/60"):
        _trip(lambda: _wrong_approval(approver, pending.device), 4, clock, {400, 403, 404})
        # Another device being linked has its own budget.
        other = make_dev(user=approver.user, status=Device.Status.PENDING)
        assert _wrong_approval(approver, other.device).status_code != 429


def test_link_code_attempts_per_address(clock: dict[str, float]) -> None:
    approver = make_dev()

    def attempt() -> Any:  # a fresh pending device each time: only the address repeats
        return _wrong_approval(approver, make_dev(user=approver.user, status=Device.Status.PENDING).device)

    with limits(link_code_ip="3/60"):
        _trip(attempt, 3, clock, {400, 403, 404})


def test_link_requests_opened_per_pending_device(clock: dict[str, float]) -> None:
    pending = make_dev(status=Device.Status.PENDING)
    client = pending.client()
    with limits(link_request_device="3/60"):
        _trip(
            lambda: client.post("/api/v1/devices/link", {"verifier_hash": b64(os.urandom(32))}, format="json"),
            3,
            clock,
            {201},
        )


def test_key_requests_per_device(clock: dict[str, float], alice: Dev, conversation: Any) -> None:
    client = alice.client()
    url = f"/api/v1/conversations/{conversation.pk}/key-requests"
    with limits(key_request_device="3/60"):
        _trip(lambda: client.post(url, {"epoch": 1}, format="json"), 3, clock, {200, 201})
