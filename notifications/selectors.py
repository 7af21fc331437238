"""Reads of the notifications app: push targets, recipients of a wake-up, delivery state."""

from __future__ import annotations

import threading
import time
import uuid

from django.conf import settings
from django.db.models import F

from conversations.models import Membership
from devices.models import Device
from messaging.models import DeliveryCursor
from notifications.models import ConversationMute, DeadLetter, Notification, PushTarget


class _TargetsFlag:
    """Whether any device has a push target, as this process last saw it: the send hot path asks
    this before anything else, so a deployment without push targets pays one attribute read.

    A True answer is kept (targets rarely all disappear); a False answer is trusted for
    E2EE_NOTIFY_TARGETS_RECHECK_S, and a registration in this process sets it at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.known = False
        self.checked_at = float("-inf")

    def get(self) -> bool:
        if self.known:
            return True
        now = time.monotonic()
        if now - self.checked_at < settings.E2EE_NOTIFY_TARGETS_RECHECK_S:
            return False
        with self._lock:
            self.checked_at = now
            self.known = PushTarget.objects.exists()
        return self.known

    def forget(self) -> None:
        """Ask the database next time (tests; a deployment that removed every target)."""
        self.known = False
        self.checked_at = float("-inf")


push_targets_flag = _TargetsFlag()


def push_targets_may_exist() -> bool:
    return push_targets_flag.get()


def push_target_get(*, device: Device) -> PushTarget | None:
    return PushTarget.objects.filter(device=device).first()


def conversation_muted(*, device_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    return ConversationMute.objects.filter(device_id=device_id, conversation_id=conversation_id).exists()


def notification_recipients(*, conversation_id: uuid.UUID, senders: set[uuid.UUID]) -> list[tuple[int, uuid.UUID]]:
    """(user id, device id) of the active member devices with a push target that did not mute
    the conversation; a device that sent every new message of the window is left out."""
    members = Membership.objects.filter(conversation_id=conversation_id).values("user_id")
    muted = ConversationMute.objects.filter(conversation_id=conversation_id).values("device_id")
    rows = (
        PushTarget.objects.filter(
            device__user_id__in=members, device__status=Device.Status.ACTIVE, device__user__is_active=True
        )
        .exclude(device_id__in=muted)
        .values_list("device__user_id", "device_id")
    )
    only_sender = next(iter(senders)) if len(senders) == 1 else None
    return [(int(user_id), device_id) for user_id, device_id in rows if device_id != only_sender]


def notifications_open_for(*, device_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Devices that already have a notification waiting (pending or retrying): new messages join it."""
    return set(
        Notification.objects.filter(
            device_id__in=device_ids, status__in=[Notification.Status.PENDING, Notification.Status.RETRYING]
        ).values_list("device_id", flat=True)
    )


def device_has_undelivered(*, device_id: uuid.UUID) -> bool:
    """Whether any unmuted conversation of the device holds a message it has not acknowledged.
    One query over the device's memberships, independent of history size."""
    device = Device.objects.filter(pk=device_id).values("user_id").first()
    if device is None:
        return False
    muted = ConversationMute.objects.filter(device_id=device_id).values("conversation_id")
    acknowledged = DeliveryCursor.objects.filter(
        device_id=device_id, delivered_seq__gte=F("conversation__last_seq")
    ).values("conversation_id")
    return (
        Membership.objects.filter(user_id=device["user_id"], conversation__last_seq__gt=0)
        .exclude(conversation_id__in=muted)
        .exclude(conversation_id__in=acknowledged)
        .exists()
    )


def notification_get(*, notification_id: uuid.UUID) -> Notification | None:
    return Notification.objects.filter(pk=notification_id).first()


def dead_letter_list() -> list[DeadLetter]:
    return list(DeadLetter.objects.select_related("notification").order_by("-created_at"))
