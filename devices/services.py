"""Writes on devices and tokens.

Top-level services own a durable transaction. `device_create` and `device_token_issue` are
building blocks that other services (`user_register`, `device_login`) compose inside their own
transaction, so they open a plain, nestable `atomic()`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import authenticate
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import InvalidCredentialsError
from accounts.locks import users_lock
from accounts.models import User
from common.realtime import device_group, publish_on_commit
from devices.errors import DeviceIdTakenError, DeviceNotActiveError, DeviceNotFoundError, DeviceNotPendingError
from devices.events import token_revoked_event
from devices.models import Device, DeviceToken
from devices.tokens import token_generate, token_hash

# `last_seen_at` is informative; writing it on every request would turn reads into writes.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class DeviceKeys:
    """What a device tells the server about itself when it first appears."""

    device_id: uuid.UUID
    name: str
    x25519_public_key: bytes
    ed25519_public_key: bytes


@dataclass(frozen=True)
class IssuedToken:
    device: Device
    token: str  # shown once, never stored


def device_create(
    *,
    user: User,
    keys: DeviceKeys,
    status: Device.Status,
    vouch_signature: bytes | None = None,
    vouched_by: Device | None = None,
) -> Device:
    with transaction.atomic():
        return Device.objects.create(
            id=keys.device_id,
            user=user,
            name=keys.name,
            x25519_public_key=keys.x25519_public_key,
            ed25519_public_key=keys.ed25519_public_key,
            status=status,
            vouch_signature=vouch_signature,
            vouched_by=vouched_by,
        )


def device_token_issue(*, device: Device) -> str:
    """Revoke the device's live token, if any, and return a fresh one (one live token each)."""
    now = timezone.now()
    token = token_generate()
    with transaction.atomic():
        DeviceToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=now)
        DeviceToken.objects.create(device=device, token_hash=token_hash(token), created_at=now)
    return token


def _same_keys(device: Device, keys: DeviceKeys) -> bool:
    return (
        bytes(device.x25519_public_key) == keys.x25519_public_key
        and bytes(device.ed25519_public_key) == keys.ed25519_public_key
    )


def device_login(*, username: str, password: str, keys: DeviceKeys) -> IssuedToken:
    """Log a device in: a new device id becomes a pending device; a known one (same account,
    same keys) gets a fresh token and keeps its status."""
    # Password hashing is slow: do it before the transaction so no lock is held meanwhile.
    user = authenticate(username=username, password=password)
    if not isinstance(user, User):
        raise InvalidCredentialsError()
    try:
        with transaction.atomic(durable=True):
            users_lock(user_ids=[user.pk])
            device = Device.objects.filter(pk=keys.device_id).first()
            if device is None:
                device = device_create(user=user, keys=keys, status=Device.Status.PENDING)
            elif device.user_id != user.pk or not _same_keys(device, keys):
                raise DeviceIdTakenError()
            token = device_token_issue(device=device)
    except IntegrityError:
        # Another account created this device id between our check and insert.
        raise DeviceIdTakenError() from None
    device.user = user
    return IssuedToken(device=device, token=token)


def device_token_revoke(*, token: DeviceToken) -> None:
    """Log out: the token stops working at once."""
    with transaction.atomic(durable=True):
        DeviceToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        # Sockets opened with this token close (protocol.md 6.1).
        publish_on_commit(device_group(token.device_id), token_revoked_event(token))


def device_vouch(*, voucher: Device, device_id: uuid.UUID, vouch_signature: bytes) -> Device:
    """An active device approves a pending device of the same account, which becomes active.

    The signature is stored as given; clients verify it (the server has no keys to check with).
    """
    with transaction.atomic(durable=True):
        # Serialises with epoch coverage checks (see accounts/locks.py).
        users_lock(user_ids=[voucher.user_id])
        # The voucher was active when the request was authenticated; make sure it still is.
        if not Device.objects.filter(pk=voucher.pk, status=Device.Status.ACTIVE).exists():
            raise DeviceNotActiveError()
        # Another account's device answers 404 like an unknown one: it is none of our business.
        device = Device.objects.filter(pk=device_id, user_id=voucher.user_id).first()
        if device is None:
            raise DeviceNotFoundError()
        if device.status != Device.Status.PENDING:
            raise DeviceNotPendingError()
        device.status = Device.Status.ACTIVE
        device.vouch_signature = vouch_signature
        device.vouched_by = voucher
        device.save(update_fields=["status", "vouch_signature", "vouched_by"])
    return device


def device_last_seen_is_due(*, device: Device, now: datetime) -> bool:
    return device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_RESOLUTION


def device_last_seen_mark(*, device: Device, now: datetime) -> None:
    """Record activity, at most once per `LAST_SEEN_RESOLUTION` (a single conditional UPDATE)."""
    with transaction.atomic(durable=True):
        Device.objects.filter(pk=device.pk).filter(
            Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=now - LAST_SEEN_RESOLUTION)
        ).update(last_seen_at=now)
    device.last_seen_at = now
