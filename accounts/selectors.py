"""Reads of accounts. Selectors never write."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Count, Q, Sum
from django.db.models.functions import Length

from accounts.errors import UserNotFoundError
from accounts.models import USERNAME_PATTERN, User
from conversations.models import ChatKeyEpoch, Conversation, Membership, WrappedKey
from devices.models import Device, DeviceToken
from devices.selectors import device_list_active
from messaging.models import Message

_USERNAME = re.compile(USERNAME_PATTERN)


@dataclass(frozen=True)
class DirectoryEntry:
    user: User
    devices: list[Device]  # active devices only, oldest first


def user_get_active(*, username: str) -> User:
    # A string that cannot be a username is simply not found (no query).
    user = User.objects.filter(username=username, is_active=True).first() if _USERNAME.fullmatch(username) else None
    if user is None:
        raise UserNotFoundError([username])
    return user


def user_directory_get(*, username: str) -> DirectoryEntry:
    """The public directory entry: identity key and active devices."""
    user = user_get_active(username=username)
    return DirectoryEntry(user=user, devices=device_list_active(user=user))


@dataclass(frozen=True)
class PurgeCounts:
    """What a purge erases (or, in a dry run, would erase)."""

    devices: int
    tokens: int
    memberships: int
    messages_tombstoned: int
    wrapped_keys_deleted: int


def user_purge_plan(*, user: User) -> PurgeCounts:
    """What `user_purge` would do to this account now (reads only)."""
    device_ids = list(Device.objects.filter(user=user).values_list("pk", flat=True))
    return PurgeCounts(
        devices=len(device_ids),
        tokens=DeviceToken.objects.filter(device_id__in=device_ids).count(),
        memberships=Membership.objects.filter(user=user).count(),
        messages_tombstoned=Message.objects.filter(sender_device_id__in=device_ids).count(),
        wrapped_keys_deleted=WrappedKey.objects.filter(recipient_device_id__in=device_ids).count(),
    )


@dataclass(frozen=True)
class ServiceStats:
    users: int
    users_active: int
    devices_by_status: dict[str, int]
    live_tokens: int
    conversations_by_kind: dict[str, int]
    memberships: int
    epochs: int
    wrapped_keys: int
    messages: int
    ciphertext_bytes: int


def service_stats() -> ServiceStats:
    """Counts and storage for operators (`manage.py stats`): a few aggregate queries, no rows."""
    users = User.objects.aggregate(total=Count("pk"), active=Count("pk", filter=Q(is_active=True)))
    devices = dict(Device.objects.order_by().values_list("status").annotate(n=Count("pk")))
    kinds = dict(Conversation.objects.order_by().values_list("kind").annotate(n=Count("pk")))
    messages = Message.objects.aggregate(total=Count("pk"), size=Sum(Length("ciphertext")))
    return ServiceStats(
        users=users["total"],
        users_active=users["active"],
        devices_by_status={status: devices.get(status, 0) for status in Device.Status.values},
        live_tokens=DeviceToken.objects.filter(revoked_at__isnull=True).count(),
        conversations_by_kind={kind: kinds.get(kind, 0) for kind in Conversation.Kind.values},
        memberships=Membership.objects.count(),
        epochs=ChatKeyEpoch.objects.count(),
        wrapped_keys=WrappedKey.objects.count(),
        messages=messages["total"],
        ciphertext_bytes=int(messages["size"] or 0),
    )
