"""Identity reset when every device is lost (protocol.md 4.8), at the service level."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from accounts.errors import InvalidCredentialsError
from accounts.models import User
from accounts.services import Registration, user_identity_reset
from common.realtime import device_group
from common.testing import capture_published_events
from conversations.models import Membership, WrappedKey
from devices.device_list import GENESIS_PREV_HASH, DeviceListEntryData, ListedDevice
from devices.models import Device, DeviceListEntry, DeviceToken
from devices.services import DeviceKeys
from tests.accounts.factories import PASSWORD, UserFactory
from tests.builders import device_list_start, make_conversation, make_dev

pytestmark = pytest.mark.django_db


def _reset(username: str, password: str = PASSWORD) -> tuple[Registration, DeviceKeys]:
    keys = DeviceKeys(uuid.uuid4(), "new phone", os.urandom(32), os.urandom(32))
    listed = ListedDevice(keys.device_id, keys.x25519_public_key, keys.ed25519_public_key, keys.name)
    entry = DeviceListEntryData(
        1, GENESIS_PREV_HASH, "created", keys.device_id, keys.device_id, 0, (listed,), os.urandom(64)
    )
    reset = user_identity_reset(
        username=username,
        password=password,
        identity_key=b"\x07" * 32,
        device=keys,
        vouch_signature=os.urandom(64),
        device_list=entry,
    )
    return reset, keys


def test_reset_replaces_identity_devices_and_device_list_and_keeps_memberships(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    alice = make_dev(user=UserFactory.create(username="alice"))
    device_list_start(alice.device)
    bob = make_dev(user=UserFactory.create(username="bob"))
    conversation = make_conversation(alice, bob.user)

    with capture_published_events() as published, django_capture_on_commit_callbacks(execute=True):
        reset, keys = _reset("alice")

    user = User.objects.get(username="alice")
    assert bytes(user.identity_key) == b"\x07" * 32
    assert Device.objects.get(pk=alice.device.pk).status == Device.Status.REVOKED
    assert not DeviceToken.objects.filter(device=alice.device, revoked_at__isnull=True).exists()
    assert reset.device.pk == keys.device_id and reset.device.status == Device.Status.ACTIVE
    assert list(DeviceListEntry.objects.filter(user=user).values_list("version", "subject_device_id")) == [
        (1, keys.device_id)
    ]
    assert not WrappedKey.objects.filter(recipient_device=alice.device).exists()
    assert Membership.objects.filter(conversation=conversation, user=user).exists()
    by_type = {(p.group, p.event["type"]) for p in published}
    assert (device_group(alice.device.pk), "device.revoked") in by_type
    assert (device_group(bob.device.pk), "device.list_changed") in by_type


def test_reset_refuses_a_wrong_password_and_changes_nothing() -> None:
    alice = make_dev(user=UserFactory.create(username="alice"))
    identity_key = bytes(alice.user.identity_key)

    with pytest.raises(InvalidCredentialsError):
        _reset("alice", password="not-the-password-2026")

    assert bytes(User.objects.get(username="alice").identity_key) == identity_key
    assert Device.objects.get(pk=alice.device.pk).status == Device.Status.ACTIVE
    assert Device.objects.count() == 1
