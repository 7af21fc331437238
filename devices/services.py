"""Writes on devices and tokens.

Top-level services own a durable transaction. `device_create` and `device_token_issue` are
building blocks that other services (`user_register`, `device_login`) compose inside their own
transaction, so they open a plain, nestable `atomic()`.
"""

from __future__ import annotations

import logging
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
from devices.errors import (
    DeviceAlreadyRevokedError,
    DeviceIdTakenError,
    DeviceNotActiveError,
    DeviceNotFoundError,
    DeviceNotPendingError,
)
from devices.events import device_revoked_event, device_signed_out_event, token_revoked_event
from devices.models import Device, DeviceToken
from devices.tokens import token_generate, token_hash

logger = logging.getLogger(__name__)

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


def device_revoke(*, device: Device, revoked_by_device: Device | None = None, reason: str) -> Device:
    """Revoke a device for good: status `revoked`, every live token revoked, and after commit a
    `device.revoked` event to the device's group so the realtime gateway closes its sockets.

    `revoked_by_device`: the device of the same account that asked (REST), or None when an
    operator did (admin, `manage.py revoke_device`); it must still be active. `reason` is for
    the log line only. A device may revoke itself. Revoking a pending device is allowed (a
    refused link request).
    """
    with transaction.atomic(durable=True):
        # The same serialisation point as vouching: the set of active devices changes.
        users_lock(user_ids=[device.user_id])
        if revoked_by_device is not None:
            if not Device.objects.filter(
                pk=revoked_by_device.pk, user_id=device.user_id, status=Device.Status.ACTIVE
            ).exists():
                raise DeviceNotActiveError()
        current = Device.objects.filter(pk=device.pk).first()
        if current is None:
            raise DeviceNotFoundError()
        if current.status == Device.Status.REVOKED:
            raise DeviceAlreadyRevokedError()
        devices_revoke_rows(device_ids=[device.pk])
    logger.info(
        "device revoked",
        extra={
            "fields": {
                "device_id": str(device.id),
                "revoked_by_device_id": str(revoked_by_device.id) if revoked_by_device else None,
                "reason": reason,
            }
        },
    )
    device.status = Device.Status.REVOKED
    return device


def devices_revoke_rows(*, device_ids: list[uuid.UUID]) -> int:
    """Building block (inside the caller's transaction, users locked): revoke these devices and
    their live tokens, and publish `device.revoked` for each after commit. Returns how many
    devices changed; revoked ones are skipped."""
    now = timezone.now()
    changed = list(
        Device.objects.filter(pk__in=device_ids).exclude(status=Device.Status.REVOKED).values_list("pk", flat=True)
    )
    Device.objects.filter(pk__in=changed).update(status=Device.Status.REVOKED)
    DeviceToken.objects.filter(device_id__in=device_ids, revoked_at__isnull=True).update(revoked_at=now)
    for device_id in changed:
        publish_on_commit(device_group(device_id), device_revoked_event(device_id=device_id))
    return len(changed)


def device_tokens_revoke_of_user(*, user_id: int, reason: str) -> int:
    """Building block: revoke every live token of the account's devices (the devices keep their
    status) and publish `device.signed_out` to each device after commit. Returns the number of
    tokens revoked."""
    now = timezone.now()
    device_ids = list(Device.objects.filter(user_id=user_id).values_list("pk", flat=True))
    revoked = DeviceToken.objects.filter(device_id__in=device_ids, revoked_at__isnull=True).update(revoked_at=now)
    for device_id in device_ids:
        publish_on_commit(device_group(device_id), device_signed_out_event(device_id=device_id, reason=reason))
    return revoked


def device_revoke_own(*, revoker: Device, device_id: uuid.UUID) -> Device:
    """A device revokes a device of its own account (itself included): REST `revoke`.
    Another account's device answers 404 like an unknown one."""
    device = Device.objects.filter(pk=device_id, user_id=revoker.user_id).first()
    if device is None:
        raise DeviceNotFoundError()
    return device_revoke(device=device, revoked_by_device=revoker, reason="revoked by a device of the account")


def device_last_seen_is_due(*, device: Device, now: datetime) -> bool:
    return device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_RESOLUTION


def device_last_seen_mark(*, device: Device, now: datetime) -> None:
    """Record activity, at most once per `LAST_SEEN_RESOLUTION` (a single conditional UPDATE)."""
    with transaction.atomic(durable=True):
        Device.objects.filter(pk=device.pk).filter(
            Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=now - LAST_SEEN_RESOLUTION)
        ).update(last_seen_at=now)
    device.last_seen_at = now
