"""Writes on devices and tokens.

Top-level services own a durable transaction. `device_create` and `device_token_issue` are
building blocks that other services (`user_register`, `device_login`) compose inside their own
transaction, so they open a plain, nestable `atomic()`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import InvalidCredentialsError
from accounts.locks import users_lock
from accounts.models import User
from common.realtime import device_group, publish_on_commit, publish_to_groups_on_commit
from devices.device_list import GENESIS_PREV_HASH, DeviceListEntryData, ListedDevice, device_list_entry_hash
from devices.errors import (
    DeviceAlreadyRevokedError,
    DeviceIdTakenError,
    DeviceListMismatchError,
    DeviceNotActiveError,
    DeviceNotFoundError,
    DeviceNotPendingError,
    LinkCodeExpiredError,
    LinkCodeInvalidError,
    LinkCodeUsedError,
    LinkKeysIncompleteError,
    LinkRequestNotFoundError,
    StaleDeviceListError,
)
from devices.events import (
    device_link_requested_event,
    device_list_changed_event,
    device_revoked_event,
    device_signed_out_event,
    token_revoked_event,
)
from devices.models import Device, DeviceListEntry, DeviceToken, LinkRequest
from devices.selectors import (
    device_ids_observing_account,
    device_list_entry_data,
    device_list_head,
    link_request_latest,
)
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


def device_revoke(
    *,
    device: Device,
    revoked_by_device: Device | None = None,
    reason: str,
    entry: DeviceListEntryData | None = None,
) -> Device:
    """Revoke a device for good: status `revoked`, every live token revoked, and after commit a
    `device.revoked` event to the device's group so the realtime gateway closes its sockets.

    `revoked_by_device`: the device of the same account that asked (REST), or None when an
    operator did (admin, `manage.py revoke_device`); it must still be active. `reason` is for
    the log line only. A device may revoke itself. Revoking a pending device is allowed (a
    refused link request). `entry`: the signed device-list entry recording the revocation
    (protocol.md 2.9), appended in the same transaction; without it, clients see the device as
    hidden by the server until a device of the account signs the revocation: with `entry`, a
    device revoked already (by an operator) only gets its entry appended.
    """
    with transaction.atomic(durable=True):
        # The same serialisation point as linking: the set of active devices changes.
        users_lock(user_ids=[device.user_id])
        if revoked_by_device is not None:
            if not Device.objects.filter(
                pk=revoked_by_device.pk, user_id=device.user_id, status=Device.Status.ACTIVE
            ).exists():
                raise DeviceNotActiveError()
        current = Device.objects.filter(pk=device.pk).first()
        if current is None:
            raise DeviceNotFoundError()
        # A device revoked without a signed entry (by an operator) can have its revocation
        # signed afterwards: the entry is appended, the rest was done already.
        already = current.status == Device.Status.REVOKED
        if already and entry is None:
            raise DeviceAlreadyRevokedError()
        if entry is not None:
            if revoked_by_device is None:
                raise DeviceNotActiveError()
            others = Device.objects.filter(user_id=current.user_id, status=Device.Status.ACTIVE).exclude(pk=current.pk)
            user = User.objects.get(pk=current.user_id)
            device_list_append(
                user=user,
                entry=entry,
                change=DeviceListEntry.Change.REVOKED,
                subject=current,
                actor=revoked_by_device,
                devices_after=list(others),
            )
            _device_list_changed_publish(user=user, version=entry.version)
        if not already:
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
    # A refused link request ends with its device: the code it shows stops working.
    LinkRequest.objects.filter(device_id__in=device_ids, status=LinkRequest.Status.WAITING).update(
        status=LinkRequest.Status.EXPIRED
    )
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


def device_revoke_own(*, revoker: Device, device_id: uuid.UUID, entry: DeviceListEntryData | None = None) -> Device:
    """A device revokes a device of its own account (itself included): REST `revoke`, with the
    signed device-list entry that records it (clients always send one for an active device).
    Another account's device answers 404 like an unknown one."""
    device = Device.objects.filter(pk=device_id, user_id=revoker.user_id).first()
    if device is None:
        raise DeviceNotFoundError()
    return device_revoke(
        device=device, revoked_by_device=revoker, reason="revoked by a device of the account", entry=entry
    )


def device_last_seen_is_due(*, device: Device, now: datetime) -> bool:
    return device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_RESOLUTION


def device_last_seen_mark(*, device: Device, now: datetime) -> None:
    """Record activity, at most once per `LAST_SEEN_RESOLUTION` (a single conditional UPDATE)."""
    with transaction.atomic(durable=True):
        Device.objects.filter(pk=device.pk).filter(
            Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=now - LAST_SEEN_RESOLUTION)
        ).update(last_seen_at=now)
    device.last_seen_at = now


# -- the signed device list and linking (protocol.md 2.9, 4.7) -----------------------------------


def _listed(device: Device) -> ListedDevice:
    return ListedDevice(
        device_id=device.id,
        x25519_public_key=bytes(device.x25519_public_key),
        ed25519_public_key=bytes(device.ed25519_public_key),
        name=device.name,
    )


def device_list_append(
    *,
    user: User,
    entry: DeviceListEntryData,
    change: DeviceListEntry.Change,
    subject: Device,
    actor: Device,
    devices_after: Sequence[Device],
) -> DeviceListEntry:
    """Building block (inside the caller's transaction, the user locked): append `entry` to the
    account's device list after checking what the server can check: it follows the head (version
    and hash chain), records this change by this actor, and lists exactly `devices_after` in
    ascending id order. The signature is stored as given; clients verify it."""
    head = device_list_head(user_id=user.pk)
    head_version = head.version if head is not None else 0
    expected_prev = (
        device_list_entry_hash(username=user.username, entry=device_list_entry_data(head))
        if head is not None
        else GENESIS_PREV_HASH
    )
    if entry.version != head_version + 1 or entry.prev_hash != expected_prev:
        raise StaleDeviceListError(head_version)
    if (head is None) != (change == DeviceListEntry.Change.CREATED):
        # Only the first entry records the first device; every later one follows it.
        raise StaleDeviceListError(head_version)
    if head is not None:
        listed_before = {uuid.UUID(d["device_id"]) for d in head.devices}
        # A link adds a device that is not listed, a revocation removes one that is: anything
        # else would append an entry no client can verify, poisoning the account's list.
        if (change == DeviceListEntry.Change.LINKED) == (subject.id in listed_before):
            raise DeviceListMismatchError()
    expected = tuple(sorted((_listed(d) for d in devices_after), key=lambda d: d.device_id.bytes))
    if (
        entry.change != change
        or entry.subject_device_id != subject.id
        or entry.actor_device_id != actor.id
        or entry.devices != expected
    ):
        raise DeviceListMismatchError()
    return DeviceListEntry.objects.create(
        user=user,
        version=entry.version,
        prev_hash=entry.prev_hash,
        change=change,
        subject_device_id=subject.id,
        actor_device_id=actor.id,
        timestamp_ms=entry.timestamp_ms,
        devices=[
            {
                "device_id": str(d.device_id),
                "x25519_public_key": base64.b64encode(d.x25519_public_key).decode("ascii"),
                "ed25519_public_key": base64.b64encode(d.ed25519_public_key).decode("ascii"),
                "name": d.name,
            }
            for d in entry.devices
        ],
        signature=entry.signature,
    )


def _device_list_changed_publish(*, user: User, version: int) -> None:
    observers = device_ids_observing_account(user_id=user.pk)
    publish_to_groups_on_commit(
        [device_group(device_id) for device_id in observers],
        device_list_changed_event(username=user.username, version=version),
    )


def link_request_open(*, device: Device, verifier_hash: bytes, now: datetime | None = None) -> LinkRequest:
    """A pending device asks to join its account: a fresh link request (any earlier waiting one
    of the device stops working) that expires after `E2EE_LINK_CODE_TTL_S`, and after commit a
    `device.link_requested` event to every active device of the account."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        users_lock(user_ids=[device.user_id])
        current = Device.objects.filter(pk=device.pk).first()
        if current is None or current.status != Device.Status.PENDING:
            raise DeviceNotPendingError()
        LinkRequest.objects.filter(device=current, status=LinkRequest.Status.WAITING).update(
            status=LinkRequest.Status.EXPIRED
        )
        request = LinkRequest.objects.create(
            device=current,
            verifier_hash=verifier_hash,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.E2EE_LINK_CODE_TTL_S),
        )
        active = Device.objects.filter(user_id=current.user_id, status=Device.Status.ACTIVE).values_list(
            "pk", flat=True
        )
        publish_to_groups_on_commit(
            [device_group(device_id) for device_id in active],
            device_link_requested_event(device=current, expires_at=request.expires_at),
        )
    return request


def device_link_approve(
    *,
    approver: Device,
    device_id: uuid.UUID,
    verifier: bytes,
    vouch_signature: bytes,
    entry: DeviceListEntryData,
    wrapped_identity_key: bytes,
    approval_mac: bytes,
    now: datetime | None = None,
) -> LinkRequest:
    """An active device approves a pending device of its account with the link code's verifier:
    the device list gains the signed entry, the device becomes active, and the approval is kept
    for the new device to fetch. A wrong, expired or used code changes nothing. Every ChatKey
    epoch of the account's conversations must already be wrapped for the new device
    (`link_keys_upload`), else `link_keys_incomplete`."""
    from conversations.selectors import link_missing_epoch_count  # conversations depends on devices

    now = now or timezone.now()
    with transaction.atomic(durable=True):
        # Serialises with epoch uploads (their coverage check) and other device changes.
        users_lock(user_ids=[approver.user_id])
        if not Device.objects.filter(pk=approver.pk, status=Device.Status.ACTIVE).exists():
            raise DeviceNotActiveError()
        device = Device.objects.select_related("user").filter(pk=device_id, user_id=approver.user_id).first()
        if device is None:
            raise DeviceNotFoundError()
        request = link_request_latest(device=device)
        if request is None:
            raise LinkRequestNotFoundError()
        if request.status == LinkRequest.Status.APPROVED:
            raise LinkCodeUsedError()
        if request.status == LinkRequest.Status.EXPIRED or request.expires_at <= now:
            raise LinkCodeExpiredError()
        if not hmac.compare_digest(hashlib.sha256(verifier).digest(), bytes(request.verifier_hash)):
            raise LinkCodeInvalidError()
        if device.status != Device.Status.PENDING:
            raise DeviceNotPendingError()
        missing = link_missing_epoch_count(device=device)
        if missing:
            raise LinkKeysIncompleteError(missing)
        active = list(Device.objects.filter(user_id=device.user_id, status=Device.Status.ACTIVE))
        device_list_append(
            user=device.user,
            entry=entry,
            change=DeviceListEntry.Change.LINKED,
            subject=device,
            actor=approver,
            devices_after=[*active, device],
        )
        device.status = Device.Status.ACTIVE
        device.vouch_signature = vouch_signature
        device.vouched_by = approver
        device.save(update_fields=["status", "vouch_signature", "vouched_by"])
        request.status = LinkRequest.Status.APPROVED
        request.approved_by = approver
        request.approved_at = now
        request.device_list_version = entry.version
        request.wrapped_identity_key = wrapped_identity_key
        request.approval_mac = approval_mac
        request.save(
            update_fields=[
                "status",
                "approved_by",
                "approved_at",
                "device_list_version",
                "wrapped_identity_key",
                "approval_mac",
            ]
        )
        _device_list_changed_publish(user=device.user, version=entry.version)
    logger.info(
        "device linked",
        extra={"fields": {"device_id": str(device.id), "approved_by_device_id": str(approver.id)}},
    )
    return request


def link_codes_expire(*, now: datetime | None = None) -> int:
    """Mark every waiting link request past its expiry as expired; returns how many. (Expiry is
    also checked on use, so this only tidies up: run it every minute or so.)"""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        return LinkRequest.objects.filter(status=LinkRequest.Status.WAITING, expires_at__lte=now).update(
            status=LinkRequest.Status.EXPIRED
        )
