from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.errors import InvalidCredentialsError
from devices.errors import DeviceIdTakenError
from devices.models import Device, DeviceToken
from devices.services import (
    DeviceKeys,
    device_last_seen_mark,
    device_login,
    device_token_revoke,
)
from devices.tokens import token_hash
from tests.accounts.factories import PASSWORD, UserFactory
from tests.builders import make_dev
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def _keys_of(device: Device) -> DeviceKeys:
    return DeviceKeys(
        device_id=device.id,
        name=device.name,
        x25519_public_key=bytes(device.x25519_public_key),
        ed25519_public_key=bytes(device.ed25519_public_key),
    )


def _new_keys() -> DeviceKeys:
    return DeviceKeys(uuid.uuid4(), "phone", os.urandom(32), os.urandom(32))


def _live_hashes(device: Device) -> list[str]:
    return list(DeviceToken.objects.filter(device=device, revoked_at__isnull=True).values_list("token_hash", flat=True))


def test_login_with_new_device_id_creates_pending_device() -> None:
    user = UserFactory.create(username="alice")
    keys = _new_keys()

    issued = device_login(username="alice", password=PASSWORD, keys=keys)

    device = Device.objects.get(pk=keys.device_id)
    assert device.user == user
    assert device.status == Device.Status.PENDING
    assert device.vouch_signature is None
    assert issued.device == device
    assert _live_hashes(device) == [token_hash(issued.token)]


def test_login_again_with_same_keys_issues_fresh_token_and_revokes_old() -> None:
    dev = make_dev(user=UserFactory.create(username="alice"))

    issued = device_login(username="alice", password=PASSWORD, keys=_keys_of(dev.device))

    assert issued.token != dev.token
    assert _live_hashes(dev.device) == [token_hash(issued.token)]
    assert DeviceToken.objects.filter(device=dev.device).count() == 2
    dev.device.refresh_from_db()
    assert dev.device.status == Device.Status.ACTIVE  # status kept


def test_login_with_existing_device_id_but_other_keys_is_device_id_taken() -> None:
    dev = make_dev(user=UserFactory.create(username="alice"))
    keys = DeviceKeys(dev.device.id, "evil", os.urandom(32), bytes(dev.device.ed25519_public_key))
    with pytest.raises(DeviceIdTakenError):
        device_login(username="alice", password=PASSWORD, keys=keys)
    assert _live_hashes(dev.device) == [token_hash(dev.token)]


def test_login_with_another_accounts_device_id_is_device_id_taken() -> None:
    UserFactory.create(username="alice")
    bobs = DeviceFactory.create()
    with pytest.raises(DeviceIdTakenError):
        device_login(username="alice", password=PASSWORD, keys=_keys_of(bobs))


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong password 123"), ("nobody", PASSWORD)])
def test_login_with_wrong_credentials_is_refused(username: str, password: str) -> None:
    UserFactory.create(username="alice")
    with pytest.raises(InvalidCredentialsError):
        device_login(username=username, password=password, keys=_new_keys())
    assert not Device.objects.exists()


def test_login_to_deactivated_account_is_refused() -> None:
    UserFactory.create(username="alice", is_active=False)
    with pytest.raises(InvalidCredentialsError):
        device_login(username="alice", password=PASSWORD, keys=_new_keys())


def test_token_revoke_makes_token_dead() -> None:
    dev = make_dev()
    token = DeviceToken.objects.get(token_hash=token_hash(dev.token))
    device_token_revoke(token=token)
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_last_seen_is_written_at_most_once_per_minute() -> None:
    device = DeviceFactory.create()
    first = timezone.now()
    device_last_seen_mark(device=device, now=first)
    device_last_seen_mark(device=device, now=first + timedelta(seconds=30))
    device.refresh_from_db()
    assert device.last_seen_at == first
    device_last_seen_mark(device=device, now=first + timedelta(seconds=61))
    device.refresh_from_db()
    assert device.last_seen_at == first + timedelta(seconds=61)
