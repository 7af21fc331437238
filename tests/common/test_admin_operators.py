"""Operator admin: no N+1 on any changelist, the revoke action equals a device's revocation, the
deactivate action, and nothing that reveals ciphertext."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from common.testing import PublishedEvent
from conversations.models import Conversation
from devices.models import Device, DeviceToken
from messaging.services import envelope_send
from tests.builders import Dev, envelope_content, make_conversation, make_dev

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "accounts/user",
    "devices/device",
    "devices/devicetoken",
    "conversations/conversation",
    "conversations/membership",
    "conversations/chatkeyepoch",
    "messaging/message",
]


def _populate(n: int) -> None:
    """n accounts, each with two devices, a conversation with another account and two messages."""
    for _ in range(n):
        dev = make_dev()
        make_dev(user=dev.user, status=Device.Status.PENDING)
        peer = make_dev()
        conversation = make_conversation(dev, peer.user)
        for sender in (dev, peer):
            envelope_send(
                device=sender.device, sender_device_id=sender.device.id, content=envelope_content(conversation)
            )


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


@pytest.mark.parametrize("page", CHANGELISTS)
def test_changelist_query_count_does_not_grow_with_rows(admin_client: Client, page: str) -> None:
    url = f"/admin/{page}/"
    _populate(5)
    few = _queries(admin_client, url)
    _populate(15)
    many = _queries(admin_client, url)
    assert many == few, f"{url}: {few} queries for 5 rows, {many} for 20"


@pytest.mark.parametrize("page", CHANGELISTS)
def test_changelist_search_and_filters_answer(admin_client: Client, page: str) -> None:
    _populate(2)
    assert admin_client.get(f"/admin/{page}/", {"q": "user"}).status_code == 200


def test_detail_pages_render_without_ciphertext(admin_client: Client) -> None:
    dev = make_dev()
    conversation = make_conversation(dev)
    content = envelope_content(conversation, ciphertext=bytes(range(200)))
    message = envelope_send(device=dev.device, sender_device_id=dev.device.id, content=content).message
    pages = [
        f"/admin/messaging/message/{message.pk}/change/",
        f"/admin/conversations/conversation/{conversation.pk}/change/",
        f"/admin/devices/device/{dev.device.pk}/change/",
        f"/admin/accounts/user/{dev.user.pk}/change/",
    ]
    for url in pages:
        html = admin_client.get(url).content.decode()
        for secret in (content.ciphertext, content.nonce, content.signature):
            assert secret.hex() not in html
            assert secret.hex()[:24] not in html


def _state(*devices: Device) -> list[tuple[Any, ...]]:
    rows = []
    for device in devices:
        device.refresh_from_db()
        live = DeviceToken.objects.filter(device=device, revoked_at__isnull=True).count()
        total = DeviceToken.objects.filter(device=device).count()
        rows.append((device.status, device.vouch_signature is not None, live, total))
    return rows


def test_admin_revoke_has_the_same_effects_as_a_device_revoking_another(
    admin_client: Client, published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # Two identical accounts: on one, a device revokes its sibling over REST; on the other, an
    # operator revokes the sibling in the admin.
    def account() -> tuple[Dev, Dev]:
        laptop = make_dev()
        return laptop, make_dev(user=laptop.user)

    rest_laptop, rest_phone = account()
    admin_laptop, admin_phone = account()

    with django_capture_on_commit_callbacks(execute=True):
        assert rest_laptop.client().post(f"/api/v1/devices/{rest_phone.device.id}/revoke").status_code == 200
    rest_events = [(e.group.replace(rest_phone.device.id.hex, "X"), e.event) for e in published]
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/devices/device/",
            {"action": "revoke_devices", "_selected_action": [str(admin_phone.device.id)]},
        )
    assert response.status_code == 302
    admin_events = [(e.group.replace(admin_phone.device.id.hex, "X"), e.event) for e in published]

    assert _state(rest_phone.device, rest_laptop.device) == _state(admin_phone.device, admin_laptop.device)
    assert _state(admin_phone.device) == [(Device.Status.REVOKED, True, 0, 1)]
    assert [(g, {**e, "device_id": "X"}) for g, e in rest_events] == [
        (g, {**e, "device_id": "X"}) for g, e in admin_events
    ]
    assert admin_events == [("device.X", {"type": "device.revoked", "device_id": str(admin_phone.device.id)})]
    for phone in (rest_phone, admin_phone):
        assert phone.client().get("/api/v1/accounts/me").json()["code"] == "invalid_token"


def test_admin_revoke_skips_revoked_devices(admin_client: Client) -> None:
    dev = make_dev()
    revoked = make_dev(user=dev.user, status=Device.Status.REVOKED)
    response = admin_client.post(
        "/admin/devices/device/",
        {"action": "revoke_devices", "_selected_action": [str(dev.device.id), str(revoked.device.id)]},
        follow=True,
    )
    assert "Revoked 1 device(s); 1 already revoked." in response.content.decode()


def test_admin_deactivate_action(
    admin_client: Client, published: list[PublishedEvent], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    dev = make_dev()
    other = make_dev(user=dev.user)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [str(dev.user.pk)]}
        )
    assert not User.objects.get(pk=dev.user.pk).is_active
    assert not DeviceToken.objects.filter(device__user=dev.user, revoked_at__isnull=True).exists()
    assert {e.event["type"] for e in published} == {"device.signed_out"}
    assert {e.event["device_id"] for e in published} == {str(dev.device.id), str(other.device.id)}
    assert dev.client().get("/api/v1/accounts/me").status_code == 401


def test_admin_cannot_edit_conversations(admin_client: Client) -> None:
    conversation: Conversation = make_conversation(make_dev())
    assert admin_client.get("/admin/conversations/conversation/add/").status_code == 403
    assert admin_client.post(f"/admin/conversations/conversation/{conversation.pk}/delete/").status_code == 403
