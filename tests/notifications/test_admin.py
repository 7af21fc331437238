"""Operators see dead letters read-only and replay them through the service."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation
from notifications.models import DeadLetter, Notification, PushTarget
from tests.builders import Dev, make_dev
from tests.notifications.helpers import send, webhook_register
from tests.notifications.receiver import running_receiver

pytestmark = pytest.mark.django_db(transaction=True)


def _dead_letter(dev: Dev) -> DeadLetter:
    notification = Notification.objects.create(
        device=dev.device,
        status=Notification.Status.DEAD,
        backend="webhook",
        attempts=6,
        last_error="webhook answered 503",
    )
    return DeadLetter.objects.create(
        notification=notification, device=dev.device, backend="webhook", attempts=6, last_error="webhook answered 503"
    )


def test_dead_letter_pages_show_details_and_offer_no_edit(admin_client: Client, alice: Dev) -> None:
    dead = _dead_letter(alice)

    listing = admin_client.get("/admin/notifications/deadletter/")
    detail = admin_client.get(f"/admin/notifications/deadletter/{dead.pk}/change/")

    assert listing.status_code == 200 and b"replay" in listing.content
    assert detail.status_code == 200
    for shown in (str(alice.device.pk), "webhook answered 503", "webhook"):
        assert shown.encode() in detail.content
    assert b'name="_save"' not in detail.content
    assert admin_client.get("/admin/notifications/deadletter/add/").status_code == 403


def test_changelists_do_not_grow_queries_with_rows(admin_client: Client) -> None:
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    pages = ["deadletter", "notification", "pushtarget"]
    for _ in range(2):
        dev = make_dev()
        _dead_letter(dev)
        PushTarget.objects.create(device=dev.device, kind="webhook", url="http://127.0.0.1:9/", secret="s")
    few = [queries(f"/admin/notifications/{page}/") for page in pages]
    for _ in range(6):
        dev = make_dev()
        _dead_letter(dev)
        PushTarget.objects.create(device=dev.device, kind="webhook", url="http://127.0.0.1:9/", secret="s")
    assert [queries(f"/admin/notifications/{page}/") for page in pages] == few


def test_push_target_secret_is_never_shown(admin_client: Client, alice: Dev) -> None:
    secret = webhook_register(alice, "http://127.0.0.1:9/hook")
    target = PushTarget.objects.get()

    page = admin_client.get(f"/admin/notifications/pushtarget/{target.pk}/change/")

    assert page.status_code == 200 and secret.encode() not in page.content


def test_replay_action_redelivers_through_the_service(
    admin_client: Client, alice: Dev, bob: Dev, conversation: Conversation
) -> None:
    with running_receiver([503] * 6 + [200]) as receiver:
        webhook_register(bob, receiver.url)
        send(alice, conversation)
        dead = DeadLetter.objects.get()

        response = admin_client.post(
            "/admin/notifications/deadletter/", {"action": "replay", "_selected_action": [dead.pk]}, follow=True
        )

    assert response.status_code == 200 and b"Replayed 1 dead letter(s)" in response.content
    assert receiver.requests[-1].answered == 200
    assert Notification.objects.get().status == Notification.Status.SENT
