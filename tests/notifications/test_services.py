"""The notification life cycle below the tasks: coalescing, claiming, pruning, the beat schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.utils import timezone

from conversations.models import Conversation
from notifications import services
from notifications.models import Notification, PushTarget
from notifications.services import (
    notification_claim,
    notifications_open,
    notifications_prune,
    notifications_requeue_stalled,
)
from notifications.tasks import retry_delay
from tests.builders import Dev

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_target(bob: Dev) -> PushTarget:
    return PushTarget.objects.create(device=bob.device, kind="webhook", url="http://127.0.0.1:9/", secret="s")


def _window(conversation: Conversation, seq: int, *senders: Dev) -> tuple[str, int, list[str]]:
    return (conversation.pk.hex, seq, [s.device.pk.hex for s in senders])


def test_messages_for_a_waiting_device_join_its_notification(
    alice: Dev, bob: Dev, conversation: Conversation, bob_target: PushTarget
) -> None:
    with mock.patch.object(services, "_enqueue") as enqueue:
        first = notifications_open(windows=[_window(conversation, 1, alice)])
        second = notifications_open(windows=[_window(conversation, 2, alice)])

    assert len(first) == 1 and second == []
    assert Notification.objects.get().device_id == bob.device.pk
    assert enqueue.call_count == 0  # scheduled on commit, which this test transaction never reaches


def test_delivery_is_scheduled_after_the_coalescing_delay(
    alice: Dev, conversation: Conversation, bob_target: PushTarget, django_capture_on_commit_callbacks: Any
) -> None:
    with mock.patch.object(services, "_enqueue") as enqueue, django_capture_on_commit_callbacks(execute=True):
        (opened,) = notifications_open(windows=[_window(conversation, 1, alice)])

    enqueue.assert_called_once_with("notifications.deliver", (str(opened),), settings.E2EE_NOTIFY_COALESCE_S)


def test_a_device_that_sent_too_is_woken_for_the_others_messages(
    alice: Dev, bob: Dev, conversation: Conversation, bob_target: PushTarget
) -> None:
    with mock.patch.object(services, "_enqueue"):
        only_bob = notifications_open(windows=[_window(conversation, 1, bob)])
        both = notifications_open(windows=[_window(conversation, 3, alice, bob)])

    assert only_bob == [] and len(both) == 1


def test_a_notification_after_a_sent_one_is_a_new_wake(
    alice: Dev, conversation: Conversation, bob_target: PushTarget
) -> None:
    with mock.patch.object(services, "_enqueue"):
        (first,) = notifications_open(windows=[_window(conversation, 1, alice)])
        Notification.objects.filter(pk=first).update(status=Notification.Status.SENT)
        (second,) = notifications_open(windows=[_window(conversation, 2, alice)])

    assert first != second


def test_claim_of_a_leased_notification_waits(bob: Dev, bob_target: PushTarget) -> None:
    notification = Notification.objects.create(
        device=bob.device, status=Notification.Status.SENDING, lease_until=timezone.now() + timedelta(seconds=20)
    )

    claim = notification_claim(notification_id=notification.pk)

    assert claim.target is None and claim.busy_for is not None and 15 < claim.busy_for <= 20


def test_claim_skips_a_device_without_target(bob: Dev) -> None:
    notification = Notification.objects.create(device=bob.device)

    assert notification_claim(notification_id=notification.pk).target is None
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SKIPPED


def test_prune_deletes_old_finished_notifications_only(bob: Dev) -> None:
    old = timezone.now() - timedelta(days=settings.E2EE_NOTIFY_KEEP_DAYS + 1)
    Notification.objects.create(device=bob.device, status=Notification.Status.SENT, created_at=old)
    Notification.objects.create(device=bob.device, status=Notification.Status.SKIPPED, created_at=old)
    dead = Notification.objects.create(device=bob.device, status=Notification.Status.DEAD, created_at=old)
    recent = Notification.objects.create(device=bob.device, status=Notification.Status.SENT)

    assert notifications_prune() == 2
    assert set(Notification.objects.values_list("pk", flat=True)) == {dead.pk, recent.pk}


def test_requeue_stalled_reenqueues_lost_and_expired_work(bob: Dev, django_capture_on_commit_callbacks: Any) -> None:
    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    lost = Notification.objects.create(device=bob.device, created_at=long_ago)  # no due time: since created
    overdue = Notification.objects.create(
        device=bob.device,
        status=Notification.Status.RETRYING,
        lease_until=now - timedelta(seconds=settings.E2EE_NOTIFY_STALL_GRACE_S + 1),
    )
    expired = Notification.objects.create(
        device=bob.device, status=Notification.Status.SENDING, lease_until=now - timedelta(seconds=1)
    )
    # Due a moment ago (its task may be on its way) and due later: both left alone.
    Notification.objects.create(device=bob.device, status=Notification.Status.RETRYING, lease_until=now)
    Notification.objects.create(
        device=bob.device, status=Notification.Status.RETRYING, lease_until=now + timedelta(seconds=60)
    )

    with mock.patch.object(services, "_enqueue") as enqueue, django_capture_on_commit_callbacks(execute=True):
        assert notifications_requeue_stalled() == 3

    assert {call.args[1] for call in enqueue.call_args_list} == {
        (str(lost.pk),),
        (str(overdue.pk),),
        (str(expired.pk),),
    }
    # A lease past its end is given up: the next task claims it.
    expired.refresh_from_db()
    assert expired.status == Notification.Status.RETRYING


def test_requeue_stalled_hands_a_late_notification_out_once_per_grace_period(
    bob: Dev, django_capture_on_commit_callbacks: Any
) -> None:
    Notification.objects.create(device=bob.device, created_at=timezone.now() - timedelta(hours=1))

    with mock.patch.object(services, "_enqueue"), django_capture_on_commit_callbacks(execute=True):
        first = notifications_requeue_stalled()
        second = notifications_requeue_stalled()  # the next sweep, its task still queued behind others

    assert (first, second) == (1, 0)


def test_claim_of_a_notification_not_due_yet_waits(bob: Dev, bob_target: PushTarget) -> None:
    # A copy of the task handed out early (by the sweep or the broker) must not send before the
    # backoff has passed.
    notification = Notification.objects.create(
        device=bob.device, status=Notification.Status.RETRYING, lease_until=timezone.now() + timedelta(seconds=30)
    )

    claim = notification_claim(notification_id=notification.pk)

    assert claim.target is None and claim.busy_for is not None and 25 < claim.busy_for <= 30


def test_backoff_is_full_jitter_below_a_doubling_cap(settings: Any) -> None:
    settings.E2EE_NOTIFY_RETRY_BASE_S, settings.E2EE_NOTIFY_RETRY_MAX_S = 1.0, 10.0
    delays = {attempt: [retry_delay(attempt) for _ in range(200)] for attempt in (1, 3, 10)}

    assert all(0 <= d <= 1.0 for d in delays[1]) and all(0 <= d <= 4.0 for d in delays[3])
    assert all(0 <= d <= 10.0 for d in delays[10]) and max(delays[10]) > 5.0


def test_beat_schedule_runs_every_periodic_cleanup_and_each_is_a_registered_task() -> None:
    from config.celery import app

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    app.loader.import_default_modules()

    assert scheduled == {
        "notifications.prune",
        "notifications.requeue_stalled",
        "media.tasks.prune_orphan_media",
        "devices.tasks.link_codes_expire",
    }
    # A name beat fires that no worker knows would only log "unregistered task" at run time.
    assert scheduled <= set(app.tasks)


def test_claim_skips_a_device_that_came_online_meanwhile(
    alice: Dev, bob: Dev, conversation: Conversation, bob_target: PushTarget
) -> None:
    from tests.notifications.helpers import mark_connected, mark_disconnected

    notification = Notification.objects.create(device=bob.device)
    mark_connected(bob)
    try:
        assert notification_claim(notification_id=notification.pk).target is None
    finally:
        mark_disconnected(bob)
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SKIPPED


def test_claim_skips_a_revoked_device(alice: Dev, bob: Dev, bob_target: PushTarget) -> None:
    from devices.models import Device

    notification = Notification.objects.create(device=bob.device)
    Device.objects.filter(pk=bob.device.pk).update(status=Device.Status.REVOKED)

    assert notification_claim(notification_id=notification.pk).target is None
