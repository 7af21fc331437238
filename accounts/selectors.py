"""Reads of accounts. Selectors never write."""

from __future__ import annotations

import re
from dataclasses import dataclass

from accounts.errors import UserNotFoundError
from accounts.models import USERNAME_PATTERN, User
from devices.models import Device
from devices.selectors import device_list_active

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
