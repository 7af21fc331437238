"""Whom this device trusts, fetched (docs/protocol.md 2.8-2.9, 4.8): the shell of `client.core.trust`.

Reads contacts' directories and signed device lists over HTTP and hands them to the core, which
verifies them; safety numbers and the person's verification of a contact. Each function is also a
`Session` method (`directory`, `device_list`, `mark_verified`, ...). Blocking HTTP.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from client import protocol as proto
from client.core.model import TrustedDirectory
from client.crypto.device_list import DeviceListEntry, VerifiedDeviceList
from client.crypto.safety import format_safety_number, safety_number
from client.errors import IdentityChangedError
from client.protocol import ApiError

if TYPE_CHECKING:
    from client.session import Session


DEVICE_LIST_PAGE = 1000  # entries per device-list page (the server's page size)


def device_list(session: Session, username: str) -> VerifiedDeviceList:
    """The account's signed device list, verified from version 1 under its pinned identity key
    and against the newest version this device saw before; raises DeviceListError."""
    if username not in session.secrets.pins:
        session.directory(username)
    return session.core.trust.learn_device_list(username, _device_list_entries(session, username))


def _device_list_entries(session: Session, username: str) -> list[DeviceListEntry]:
    entries: list[DeviceListEntry] = []
    while True:
        _, body = session.transport.execute(proto.device_list_request(username, after=len(entries)))
        page = [proto.parse_device_list_entry(e) for e in body["entries"]]
        entries.extend(page)
        if not page or len(page) < DEVICE_LIST_PAGE:
            return entries


def directory(session: Session, username: str, *, refresh: bool = False) -> TrustedDirectory:
    """The contact's devices that are on its verified signed device list (2.9) with a vouch
    under its (pinned) identity key; the others are untrusted, and listed devices the server
    does not show are hidden."""
    cached = session.core.trust.directories.get(username)
    if cached is not None and not refresh:
        return cached
    _, body = session.transport.execute(proto.directory_request(username))
    entry = proto.DirectoryEntry.parse(body)
    session.core.trust.pin(username, entry.identity_key)
    entries: list[DeviceListEntry] | ApiError
    try:
        entries = _device_list_entries(session, username)
    except ApiError as exc:
        entries = exc
    return session.core.trust.learn_directory(entry, entries)


def forget_directory(session: Session, username: str) -> None:
    """Drop the cached directory of `username` (its device list changed); epochs are checked
    against the lists again before the next send (2.14)."""
    session.core.trust.forget_directory(username)


def safety_number_shown(session: Session, username: str) -> str:
    own = session.secrets.pins.get(session.username) or session.directory(session.username).identity_key
    other = session.directory(username).identity_key
    return format_safety_number(safety_number(session.username, own, username, other))


def identity_mark_verified(session: Session, username: str, *, identity_key: bytes | None = None) -> None:
    """Record that a person compared `username`'s safety number. With `identity_key`: accept
    that key, which the server now shows, in place of a pinned one that changed (the contact
    reset its identity, protocol.md 4.8): it is pinned, its new device-list chain is verified
    from version 1, and it is verified. Refused (IdentityChangedError) if the server shows
    another key than the one compared."""
    if identity_key is not None and session.secrets.pins.get(username) != identity_key:
        if session.identity_offered(username) != identity_key:
            raise IdentityChangedError(username)
        session.secrets.pins[username] = identity_key
        session.secrets.device_lists.pop(username, None)  # the old chain ended with the old key
        session.core.trust.directories.pop(username, None)
        session.core.trust.lists_checked.discard(username)
    session.secrets.verified[username] = session.directory(username).identity_key


def identity_offered(session: Session, username: str) -> bytes:
    """The identity key the server shows for `username` now, pinned or not (to compare its
    safety number after an `identity_changed`, before accepting it with `mark_verified`)."""
    _, body = session.transport.execute(proto.directory_request(username))
    return proto.DirectoryEntry.parse(body).identity_key


def safety_number_offered(session: Session, username: str, *, identity_key: bytes | None = None) -> str:
    """The safety number with `identity_key` (default: the one the server shows for
    `username` now), to compare before accepting it with `mark_verified`."""
    own = session.secrets.pins.get(session.username) or session.directory(session.username).identity_key
    other = identity_key if identity_key is not None else session.identity_offered(username)
    return format_safety_number(safety_number(session.username, own, username, other))


def trusted_device(session: Session, username: str, device_id: uuid.UUID) -> proto.PublicDevice:
    """The device if it is on `username`'s verified signed device list with a valid vouch
    under the pinned identity key; DecryptError (unvouched_device, identity_changed) if not."""
    return session.resolve(lambda fetches: session.core.trust.trusted_device(username, device_id, fetches))
