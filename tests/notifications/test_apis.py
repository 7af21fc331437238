"""The push target and mute endpoints (protocol.md 4.6)."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.models import Conversation
from notifications.models import ConversationMute, PushTarget
from tests.builders import Dev

pytestmark = pytest.mark.django_db

TARGET = "/api/v1/devices/me/push-target"


def test_webhook_registration_shows_the_secret_once(alice: Dev) -> None:
    client = alice.client()
    created = client.put(TARGET, {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}, format="json")

    assert created.status_code == 200
    assert created.json()["kind"] == "webhook" and len(created.json()["secret"]) >= 40
    shown = client.get(TARGET).json()
    assert "secret" not in shown and shown["url"] == "http://127.0.0.1:9/hook"
    assert PushTarget.objects.get(device=alice.device).secret == created.json()["secret"]


def test_reregistration_replaces_the_target_and_its_secret(alice: Dev) -> None:
    client = alice.client()
    first = client.put(TARGET, {"kind": "webhook", "url": "http://127.0.0.1:9/a"}, format="json").json()
    second = client.put(TARGET, {"kind": "webhook", "url": "http://127.0.0.1:9/b"}, format="json").json()

    assert first["secret"] != second["secret"]
    assert list(PushTarget.objects.values_list("url", flat=True)) == ["http://127.0.0.1:9/b"]


def test_delete_removes_the_target_and_a_second_delete_is_404(alice: Dev) -> None:
    client = alice.client()
    client.put(TARGET, {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}, format="json")

    assert client.delete(TARGET).status_code == 204
    missing = client.delete(TARGET)
    assert missing.status_code == 404 and missing.json()["code"] == "push_target_not_found"
    assert client.get(TARGET).json()["code"] == "push_target_not_found"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "http://u:p@example.com/"]
)
def test_registration_refuses_non_http_urls(alice: Dev, url: str) -> None:
    response = alice.client().put(TARGET, {"kind": "webhook", "url": url}, format="json")

    assert response.status_code == 400 and response.json()["code"] == "push_target_url_refused"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/x", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.169.254/x"]
)
def test_registration_refuses_private_addresses_unless_allowed(alice: Dev, url: str, settings: Any) -> None:
    settings.E2EE_NOTIFY_ALLOW_PRIVATE_URLS = False
    response = alice.client().put(TARGET, {"kind": "webhook", "url": url}, format="json")

    assert response.status_code == 400 and response.json()["code"] == "push_target_url_refused"


def test_webpush_needs_a_vapid_key_on_the_server(alice: Dev, settings: Any) -> None:
    settings.E2EE_VAPID_PRIVATE_KEY = ""
    body = {"kind": "webpush", "url": "https://push.example.com/x", "keys": {"p256dh": "a", "auth": "b"}}
    response = alice.client().put(TARGET, body, format="json")

    assert response.status_code == 409 and response.json()["code"] == "webpush_not_configured"


def test_webpush_needs_the_subscription_keys(alice: Dev, settings: Any) -> None:
    settings.E2EE_VAPID_PRIVATE_KEY = "configured"
    response = alice.client().put(TARGET, {"kind": "webpush", "url": "https://push.example.com/x"}, format="json")

    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


def test_push_config_names_the_vapid_public_key(alice: Dev, settings: Any) -> None:
    settings.E2EE_VAPID_PRIVATE_KEY, settings.E2EE_VAPID_PUBLIC_KEY = "private", "BPublic"

    assert alice.client().get("/api/v1/push/config").json() == {"webpush_vapid_public_key": "BPublic"}


def test_mute_and_unmute_are_idempotent(alice: Dev, conversation: Conversation) -> None:
    client = alice.client()
    url = f"/api/v1/conversations/{conversation.pk}/mute"

    assert client.put(url).status_code == 204
    assert client.put(url).status_code == 204
    assert ConversationMute.objects.filter(device=alice.device, conversation=conversation).count() == 1
    assert client.delete(url).status_code == 204
    assert client.delete(url).status_code == 204
    assert not ConversationMute.objects.exists()


def test_non_member_cannot_mute(conversation: Conversation) -> None:
    from tests.builders import make_dev

    outsider = make_dev()
    response = outsider.client().put(f"/api/v1/conversations/{conversation.pk}/mute")

    assert response.status_code == 404 and response.json()["code"] == "conversation_not_found"


def test_endpoints_need_a_device_token(api: Any) -> None:
    assert api.get(TARGET).status_code == 401


def test_webpush_keys_longer_than_stored_are_refused(alice: Dev, settings: Any) -> None:
    settings.E2EE_VAPID_PRIVATE_KEY = "configured"
    body = {"kind": "webpush", "url": "https://push.example.com/x", "keys": {"p256dh": "a", "auth": "b" * 65}}
    response = alice.client().put(TARGET, body, format="json")

    assert response.status_code == 400 and "keys.auth" in response.json()["extra"]["fields"]
