"""Web Push: a payload-less push with a VAPID Authorization header, to a real loopback endpoint
standing in for the browser's push service."""

from __future__ import annotations

from typing import Any

import pytest
from py_vapid import Vapid  # type: ignore[import-untyped]

from conversations.models import Conversation
from notifications.models import DeadLetter, Notification
from tests.builders import Dev
from tests.notifications.helpers import send
from tests.notifications.receiver import running_receiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vapid(settings: Any) -> Vapid:
    key = Vapid()
    key.generate_keys()
    pem = key.private_pem().decode("ascii")
    settings.E2EE_VAPID_PRIVATE_KEY = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    settings.E2EE_VAPID_SUBJECT = "mailto:ops@example.com"
    return key


def _subscribe(dev: Dev, endpoint: str) -> None:
    body = {"kind": "webpush", "url": endpoint, "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz", "auth": "tBHItJI5"}}
    response = dev.client().put("/api/v1/devices/me/push-target", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["secret"] is None


def test_webpush_wake_is_an_empty_vapid_signed_push(
    alice: Dev, bob: Dev, conversation: Conversation, vapid: Vapid
) -> None:
    with running_receiver([201]) as push_service:
        _subscribe(bob, push_service.url)
        send(alice, conversation)

    assert len(push_service.requests) == 1
    request = push_service.requests[0]
    assert request.body == b""
    assert "content-encoding" not in request.headers and "encryption" not in request.headers
    authorization = request.headers["authorization"]
    assert authorization.startswith("vapid t=")
    assert Vapid.verify(authorization)  # the JWT is signed by the key named in k=
    ours = vapid.sign({"sub": "mailto:ops@example.com", "aud": "http://127.0.0.1"})["Authorization"]
    assert authorization.rsplit("k=", 1)[1] == ours.rsplit("k=", 1)[1]  # and that key is ours
    assert request.headers["ttl"] == "3600"
    assert Notification.objects.get().status == Notification.Status.SENT


def test_expired_subscription_is_dead_lettered_at_once(
    alice: Dev, bob: Dev, conversation: Conversation, vapid: Vapid
) -> None:
    with running_receiver([410]) as push_service:
        _subscribe(bob, push_service.url)
        send(alice, conversation)

    assert len(push_service.requests) == 1
    dead = DeadLetter.objects.get()
    assert (dead.backend, dead.attempts, dead.last_error) == ("webpush", 1, "push service answered 410")
