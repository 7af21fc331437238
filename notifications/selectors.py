"""Reads of the notifications app: push targets, recipients of a wake-up, delivery state."""

from __future__ import annotations

import uuid

from django.db.models import F

from conversations.models import Membership
from devices.models import Device
from messaging.models import DeliveryCursor
from notifications.models import ConversationMute, DeadLetter, Notification, PushTarget


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
