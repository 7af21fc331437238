"""Writes on accounts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from accounts.errors import PasswordInvalidError, UsernameTakenError
from accounts.models import User
from devices.errors import DeviceIdTakenError
from devices.models import Device
from devices.services import DeviceKeys, device_create, device_token_issue


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
) -> Registration:
    """Create an account with its first device, active at once (vouched by the identity key
    the device has just generated), and that device's token."""
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
            token = device_token_issue(device=first_device)
    except IntegrityError:
        # A concurrent registration inserted the same username or device id after our check.
        _raise_if_taken(username=username, device_id=device.device_id)
        raise
    return Registration(user=user, device=first_device, token=token)
