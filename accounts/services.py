"""Writes on accounts."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from accounts.errors import InvalidCredentialsError, PasswordInvalidError, UsernameTakenError
from accounts.locks import users_lock
from accounts.models import User
from accounts.selectors import PurgeCounts, user_purge_plan
from common.realtime import device_group, publish_to_groups_on_commit
from conversations.services import memberships_remove_user, wrapped_keys_delete_for_devices
from devices.device_list import DeviceListEntryData
from devices.errors import DeviceIdTakenError
from devices.events import device_list_changed_event
from devices.models import Device, DeviceListEntry, DeviceToken
from devices.selectors import device_ids_observing_account
from devices.services import (
    DeviceKeys,
    device_create,
    device_list_append,
    device_token_issue,
    device_tokens_revoke_of_user,
    devices_revoke_rows,
)
from messaging.services import messages_tombstone_sent_by

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    user: User
    device: Device
    token: str  # shown once, never stored


def _raise_if_taken(*, username: str, device_id: uuid.UUID) -> None:
    if User.objects.filter(username=username).exists():
        raise UsernameTakenError()
    if Device.objects.filter(pk=device_id).exists():
        raise DeviceIdTakenError()


def user_register(
    *,
    username: str,
    password: str,
    identity_key: bytes,
    device: DeviceKeys,
    vouch_signature: bytes,
    device_list: DeviceListEntryData | None = None,
) -> Registration:
    """Create an account with its first device, active at once (vouched by the identity key
    the device has just generated), and that device's token. `device_list`: the first entry of
    the account's signed device list (protocol.md 2.9), listing that device alone."""
    user = User(username=username, identity_key=identity_key)
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise PasswordInvalidError(exc.messages) from None
    # Hash before the transaction: it is slow and must not hold the database write lock.
    user.set_password(password)
    try:
        with transaction.atomic(durable=True):
            _raise_if_taken(username=username, device_id=device.device_id)
            user.save()
            first_device = device_create(
                user=user, keys=device, status=Device.Status.ACTIVE, vouch_signature=vouch_signature
            )
            if device_list is not None:
                device_list_append(
                    user=user,
                    entry=device_list,
                    change=DeviceListEntry.Change.CREATED,
                    subject=first_device,
                    actor=first_device,
                    devices_after=[first_device],
                )
            token = device_token_issue(device=first_device)
    except IntegrityError:
        # A concurrent registration inserted the same username or device id after our check.
        _raise_if_taken(username=username, device_id=device.device_id)
        raise
    return Registration(user=user, device=first_device, token=token)


def user_deactivate(*, user: User, reason: str) -> int:
    """Operator action: the account can no longer log in or use any token; every live token is
    revoked and each device's connections are closed (`device.signed_out` after commit).
    Devices keep their status, so `is_active = True` (admin) brings the account back once its
    devices log in again. Returns the number of tokens revoked."""
    with transaction.atomic(durable=True):
        users_lock(user_ids=[user.pk])
        User.objects.filter(pk=user.pk).update(is_active=False)
        revoked = device_tokens_revoke_of_user(user_id=user.pk, reason="account_deactivated")
    user.is_active = False
    logger.info("user deactivated", extra={"fields": {"user_id": user.pk, "reason": reason}})
    return revoked


def user_purge(*, user: User) -> PurgeCounts:
    """Operator action on a person's request: erase the account's data, keeping what other
    members need for a consistent history (docs/operations.md, "Purging a user").

    - every device revoked (sockets closed), every token deleted;
    - removed from every conversation;
    - every message it sent is tombstoned: content erased, row (and so `seq`) kept;
    - ChatKeys wrapped for its devices deleted (keys it wrapped for others stay: theirs);
    - the account renamed `purged_<id>`, identity key, password, names and e-mail erased,
      deactivated. Devices keep their public keys (other members' clients verify with them the
      ChatKeys those devices wrapped for them) but lose their names.
    Rows referenced by other members' data (devices, the account) cannot be deleted.
    """
    with transaction.atomic(durable=True):
        users_lock(user_ids=[user.pk])
        plan = user_purge_plan(user=user)
        device_ids = list(Device.objects.filter(user=user).values_list("pk", flat=True))
        devices_revoke_rows(device_ids=device_ids)
        DeviceToken.objects.filter(device_id__in=device_ids).delete()
        Device.objects.filter(pk__in=device_ids).update(name="purged")
        memberships_remove_user(user_id=user.pk)
        messages_tombstone_sent_by(device_ids=device_ids)
        wrapped_keys_delete_for_devices(device_ids=device_ids)
        User.objects.filter(pk=user.pk).update(
            username=f"purged_{user.pk}",
            identity_key=b"",
            password=make_password(None),  # unusable
            first_name="",
            last_name="",
            email="",
            is_active=False,
            is_staff=False,
            is_superuser=False,
        )
    logger.info("user purged", extra={"fields": {"user_id": user.pk}})
    user.refresh_from_db()
    return plan


def user_identity_reset(
    *,
    username: str,
    password: str,
    identity_key: bytes,
    device: DeviceKeys,
    vouch_signature: bytes,
    device_list: DeviceListEntryData,
) -> Registration:
    """Every device of the account is lost (protocol.md 4.8): authenticated by the password
    alone, replace the account identity key, revoke every device and token at once (their
    sockets close), drop the ChatKeys wrapped for them and the old signed device list, and start a
    new list whose first entry lists the new first device, active at once. Memberships and the
    message log stay: the new device asks members for the keys (key requests), and contacts'
    devices answer only once a person verified the new identity key.

    The server could do all of this itself; that is why contacts' clients see an identity change
    and share nothing until it is verified (docs/security.md)."""
    user = authenticate(username=username, password=password)
    if not isinstance(user, User):
        raise InvalidCredentialsError()
    try:
        with transaction.atomic(durable=True):
            users_lock(user_ids=[user.pk])
            if Device.objects.filter(pk=device.device_id).exists():
                raise DeviceIdTakenError()
            old_devices = list(Device.objects.filter(user=user).values_list("pk", flat=True))
            devices_revoke_rows(device_ids=old_devices)
            wrapped_keys_delete_for_devices(device_ids=old_devices)
            DeviceListEntry.objects.filter(user=user).delete()
            User.objects.filter(pk=user.pk).update(identity_key=identity_key)
            user.identity_key = identity_key
            first_device = device_create(
                user=user, keys=device, status=Device.Status.ACTIVE, vouch_signature=vouch_signature
            )
            device_list_append(
                user=user,
                entry=device_list,
                change=DeviceListEntry.Change.CREATED,
                subject=first_device,
                actor=first_device,
                devices_after=[first_device],
            )
            observers = device_ids_observing_account(user_id=user.pk)
            publish_to_groups_on_commit(
                [device_group(device_id) for device_id in observers],
                device_list_changed_event(username=user.username, version=device_list.version),
            )
            token = device_token_issue(device=first_device)
    except IntegrityError:
        raise DeviceIdTakenError() from None
    logger.info("identity reset", extra={"fields": {"user_id": user.pk, "revoked_devices": len(old_devices)}})
    return Registration(user=user, device=first_device, token=token)
