"""What the core may be missing, and the typed results of sealing and opening.

The core never fetches. When a check needs something it does not hold (a conversation, a
contact's directory or device list, this device's wrapped keys of a conversation) it stops and
says so with a `Missing` result naming a `Need`; the shell (the synchronous `Session`, the
realtime client) fetches exactly that, hands it to the core, and calls again with the same
`Fetches`, which remembers what was fetched during this one operation: a check that wants "the
newest directory" is satisfied by one fetched moments ago, so the loop always ends.

A fetch that failed is recorded too (`Fetches.failed`): the core raises that error where the
data would have been used, which is where it decides whether the failure is a verdict on the
message (a contact without a directory entry: `unvouched_device`) or not (a server that cannot
be reached: the caller tries again later).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from client import protocol as proto
from client.crypto.errors import DecryptError


@dataclass(frozen=True)
class ConversationNeeded:
    """Fetch the conversation (its members and current epoch)."""

    conversation_id: uuid.UUID

    def __str__(self) -> str:
        return f"conversation {self.conversation_id}"


@dataclass(frozen=True)
class DirectoryNeeded:
    """Fetch the account's directory entry (identity key, devices) and its signed device list."""

    username: str

    def __str__(self) -> str:
        return f"directory of {self.username}"


@dataclass(frozen=True)
class DeviceListNeeded:
    """Fetch the account's signed device list (every page)."""

    username: str

    def __str__(self) -> str:
        return f"device list of {self.username}"


@dataclass(frozen=True)
class KeysNeeded:
    """Fetch this device's wrapped ChatKeys of the conversation (every epoch)."""

    conversation_id: uuid.UUID

    def __str__(self) -> str:
        return f"keys of conversation {self.conversation_id}"


Need = ConversationNeeded | DirectoryNeeded | DeviceListNeeded | KeysNeeded

# More fetches than this for one operation means a bug (the core asking again for what it got).
MAX_FETCHES = 64


@dataclass
class Fetches:
    """What the shell fetched for one operation (and what failed), across the core's calls."""

    done: set[Need] = field(default_factory=set)
    failed: dict[Need, Exception] = field(default_factory=dict)
    count: int = 0

    def fresh(self, need: Need) -> bool:
        """True if `need` was fetched during this operation; raises the error if it failed."""
        error = self.failed.get(need)
        if error is not None:
            raise error
        return need in self.done

    def record(self, need: Need, error: Exception | None = None) -> None:
        self.count += 1
        if self.count > MAX_FETCHES:
            raise RuntimeError(f"the core asked for more than {MAX_FETCHES} fetches (last: {need})")
        if error is None:
            self.done.add(need)
            self.failed.pop(need, None)
        else:
            self.failed[need] = error


class NeedError(Exception):
    """Raised inside the core when it lacks `need`; the public entry points turn it into `Missing`."""

    def __init__(self, need: Need) -> None:
        super().__init__(f"missing: {need}")
        self.need = need


@dataclass(frozen=True)
class Missing:
    """The core cannot finish without `need`: fetch it and call again with the same `Fetches`."""

    need: Need


@dataclass(frozen=True)
class Sealed:
    """A sealed message: the send request; its body is also a `send` frame's `envelope` (6.3)."""

    request: proto.Request
    client_message_id: bytes
    epoch: int

    @property
    def body(self) -> dict[str, Any]:
        assert self.request.json is not None
        return self.request.json


@dataclass(frozen=True)
class Refused:
    """The envelope failed a check (2.3): `error.reason` says which."""

    error: DecryptError
