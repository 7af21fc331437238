from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.errors import UserNotFoundError
from accounts.selectors import user_directory_get
from common.testing import forbid_writes
from devices.models import Device
from tests.accounts.factories import UserFactory
from tests.devices.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_directory_lists_only_active_devices_oldest_first(django_assert_num_queries: Any) -> None:
    user = UserFactory.create(username="alice")
    now = timezone.now()
    newer = DeviceFactory.create(user=user, created_at=now)
    older = DeviceFactory.create(user=user, created_at=now - timedelta(days=1))
    DeviceFactory.create(user=user, status=Device.Status.PENDING)
    DeviceFactory.create(user=user, status=Device.Status.REVOKED)

    with forbid_writes(), django_assert_num_queries(2):
        entry = user_directory_get(username="alice")

    assert entry.user == user
    assert [d.id for d in entry.devices] == [older.id, newer.id]


@pytest.mark.parametrize("username", ["nobody", "Alice", "alice\n", "a" * 40, "💥", ""])
def test_directory_unknown_or_malformed_username_is_user_not_found(username: str) -> None:
    UserFactory.create(username="alice")
    with pytest.raises(UserNotFoundError) as caught:
        user_directory_get(username=username)
    assert caught.value.extra == {"usernames": [username]}


def test_directory_hides_deactivated_accounts() -> None:
    UserFactory.create(username="alice", is_active=False)
    with pytest.raises(UserNotFoundError):
        user_directory_get(username="alice")
