from __future__ import annotations

import os
import uuid

import pytest

from accounts.errors import PasswordInvalidError, UsernameTakenError
from accounts.models import User
from accounts.services import user_register
from devices.errors import DeviceIdTakenError
from devices.models import Device, DeviceToken
from devices.services import DeviceKeys
from devices.tokens import token_hash
from tests.accounts.factories import PASSWORD, UserFactory
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def _keys(device_id: uuid.UUID | None = None) -> DeviceKeys:
    return DeviceKeys(
        device_id=device_id or uuid.uuid4(),
        name="laptop",
        x25519_public_key=os.urandom(32),
        ed25519_public_key=os.urandom(32),
    )


def _counts() -> tuple[int, int, int]:
    return User.objects.count(), Device.objects.count(), DeviceToken.objects.count()


def test_register_creates_account_with_active_first_device_and_token() -> None:
    identity_key, vouch, keys = os.urandom(32), os.urandom(64), _keys()

    registration = user_register(
        username="alice", password=PASSWORD, identity_key=identity_key, device=keys, vouch_signature=vouch
    )

    user = User.objects.get(username="alice")
    assert bytes(user.identity_key) == identity_key
    assert user.check_password(PASSWORD)
    device = Device.objects.get(pk=keys.device_id)
    assert device.user == user
    assert device.status == Device.Status.ACTIVE
    assert device.vouch_signature is not None
    assert bytes(device.vouch_signature) == vouch
    assert bytes(device.x25519_public_key) == keys.x25519_public_key
    assert device.vouched_by is None
    # Only the hash of the token is stored.
    token = DeviceToken.objects.get(device=device)
    assert token.token_hash == token_hash(registration.token)
    assert token.token_hash != registration.token
    assert len(registration.token) == 43


def test_register_refuses_weak_password_and_writes_nothing() -> None:
    before = _counts()
    with pytest.raises(PasswordInvalidError) as caught:
        user_register(
            username="alice",
            password="alice",
            identity_key=os.urandom(32),
            device=_keys(),
            vouch_signature=os.urandom(64),
        )
    assert caught.value.code == "password_invalid"
    assert caught.value.extra["messages"]  # Django's validator messages
    assert _counts() == before


def test_register_refuses_taken_username_and_writes_nothing() -> None:
    UserFactory.create(username="alice")
    before = _counts()
    with pytest.raises(UsernameTakenError):
        user_register(
            username="alice",
            password=PASSWORD,
            identity_key=os.urandom(32),
            device=_keys(),
            vouch_signature=os.urandom(64),
        )
    assert _counts() == before


def test_register_refuses_taken_device_id_and_writes_nothing() -> None:
    existing = DeviceFactory.create()
    before = _counts()
    with pytest.raises(DeviceIdTakenError):
        user_register(
            username="alice",
            password=PASSWORD,
            identity_key=os.urandom(32),
            device=_keys(existing.id),
            vouch_signature=os.urandom(64),
        )
    assert _counts() == before
