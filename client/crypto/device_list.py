"""The account's signed, versioned device list (docs/protocol.md 2.9).

Each version is an entry signed by the account identity key that names one change (the first
device, a link, a revocation), who made it and when, the hash of the previous entry, and the
complete resulting list of devices. The entries form a hash chain, so the list is also the
append-only log of the account's device changes: a device added or hidden by the server, a
dropped or rewritten entry, or an older version served again (after the client has seen a
newer one) is detected.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from client.crypto.encoding import str16, u8, u16, u32, uuid_bytes
from client.crypto.keys import KEY_BYTES, IdentityKeyPair, ed25519_verify
from client.crypto.labels import DEVICE_LIST_HASH_LABEL, DEVICE_LIST_LABEL, PROTOCOL_VERSION

CHANGE_CODES = {"created": 1, "linked": 2, "revoked": 3}
HASH_BYTES = 32
GENESIS_PREV_HASH = bytes(HASH_BYTES)
MAX_VERSION = 2**31 - 1


class DeviceListError(ValueError):
    """The device list the server presented does not verify (reason in the message)."""


@dataclass(frozen=True)
class ListedDevice:
    device_id: uuid.UUID
    x25519_public_key: bytes
    ed25519_public_key: bytes
    name: str


@dataclass(frozen=True)
class DeviceListEntry:
    version: int
    prev_hash: bytes
    change: str
    subject_device_id: uuid.UUID
    actor_device_id: uuid.UUID
    timestamp_ms: int
    devices: tuple[ListedDevice, ...]
    signature: bytes = b""


@dataclass(frozen=True)
class VerifiedDeviceList:
    """The head of a verified chain: its version, hash and devices."""

    version: int
    hash: bytes
    devices: dict[uuid.UUID, ListedDevice]
    entries: tuple[DeviceListEntry, ...]
    # `device_list_hash` of every version, oldest first (hashes[v - 1] is version v's).
    hashes: tuple[bytes, ...] = ()


def _u64(value: int) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise ValueError(f"{value!r} does not fit in an unsigned 64-bit integer")
    return value.to_bytes(8, "big")


def device_list_entry_bytes(*, username: str, entry: DeviceListEntry) -> bytes:
    """The signed bytes (2.9 `device_list_entry`); raises ValueError for a malformed entry."""
    if entry.change not in CHANGE_CODES:
        raise ValueError(f"unknown change {entry.change!r}")
    if len(entry.prev_hash) != HASH_BYTES:
        raise ValueError("prev_hash is 32 bytes")
    parts = [
        DEVICE_LIST_LABEL,
        u8(PROTOCOL_VERSION),
        str16(username),
        u32(entry.version),
        entry.prev_hash,
        u8(CHANGE_CODES[entry.change]),
        uuid_bytes(entry.subject_device_id),
        uuid_bytes(entry.actor_device_id),
        _u64(entry.timestamp_ms),
        u16(len(entry.devices)),
    ]
    for device in entry.devices:
        if len(device.x25519_public_key) != KEY_BYTES or len(device.ed25519_public_key) != KEY_BYTES:
            raise ValueError("device public keys are 32 bytes")
        parts += [uuid_bytes(device.device_id), device.x25519_public_key, device.ed25519_public_key, str16(device.name)]
    return b"".join(parts)


def device_list_entry_hash(*, username: str, entry: DeviceListEntry) -> bytes:
    """`device_list_hash`: SHA-256 over the hash label and the signed bytes (not the signature)."""
    return hashlib.sha256(DEVICE_LIST_HASH_LABEL + device_list_entry_bytes(username=username, entry=entry)).digest()


def _sorted(devices: Sequence[ListedDevice]) -> tuple[ListedDevice, ...]:
    return tuple(sorted(devices, key=lambda d: d.device_id.bytes))


def device_list_next(
    *,
    identity: IdentityKeyPair,
    username: str,
    head: DeviceListEntry | None,
    change: str,
    subject: ListedDevice,
    actor_device_id: uuid.UUID,
    timestamp_ms: int,
) -> DeviceListEntry:
    """The signed entry after `head` (None: the account's first) recording one change."""
    devices: tuple[ListedDevice, ...]
    if head is None:
        if change != "created":
            raise ValueError("the first entry records the first device")
        version, prev_hash, devices = 1, GENESIS_PREV_HASH, (subject,)
    else:
        version, prev_hash = head.version + 1, device_list_entry_hash(username=username, entry=head)
        others = [d for d in head.devices if d.device_id != subject.device_id]
        if change == "linked":
            if len(others) != len(head.devices):
                raise ValueError("the device is listed already")
            devices = _sorted([*others, subject])
        elif change == "revoked":
            if len(others) == len(head.devices):
                raise ValueError("the device is not listed")
            devices = _sorted(others)
        else:
            raise ValueError(f"change {change!r} cannot follow an entry")
    unsigned = DeviceListEntry(
        version=version,
        prev_hash=prev_hash,
        change=change,
        subject_device_id=subject.device_id,
        actor_device_id=actor_device_id,
        timestamp_ms=timestamp_ms,
        devices=devices,
    )
    return replace(unsigned, signature=identity.sign(device_list_entry_bytes(username=username, entry=unsigned)))


def _check_step(previous: DeviceListEntry | None, entry: DeviceListEntry) -> None:
    ids = [d.device_id.bytes for d in entry.devices]
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise DeviceListError(f"version {entry.version}: devices are not in strictly ascending id order")
    if previous is None:
        if entry.change != "created" or entry.prev_hash != GENESIS_PREV_HASH:
            raise DeviceListError("version 1 must record the account's first device")
        if [d.device_id for d in entry.devices] != [entry.subject_device_id]:
            raise DeviceListError("version 1 must list exactly its subject")
        if entry.actor_device_id != entry.subject_device_id:
            raise DeviceListError("the first device creates itself")
        return
    before = {d.device_id: d for d in previous.devices}
    after = {d.device_id: d for d in entry.devices}
    if entry.actor_device_id not in before:
        raise DeviceListError(f"version {entry.version}: made by a device that was not on the list")
    if entry.change == "linked":
        expected = set(before) | {entry.subject_device_id}
        if entry.subject_device_id in before or set(after) != expected:
            raise DeviceListError(f"version {entry.version}: a link must add exactly its subject")
    elif entry.change == "revoked":
        if entry.subject_device_id not in before or set(after) != set(before) - {entry.subject_device_id}:
            raise DeviceListError(f"version {entry.version}: a revocation must remove exactly its subject")
    else:
        raise DeviceListError(f"version {entry.version}: {entry.change!r} after version 1")
    for device_id, device in after.items():
        if device_id in before and before[device_id] != device:
            raise DeviceListError(f"version {entry.version}: device {device_id} changed its keys or name")


def device_list_verify(
    *,
    username: str,
    identity_public_key: bytes,
    entries: Sequence[DeviceListEntry],
    pinned: tuple[int, bytes] | None = None,
) -> VerifiedDeviceList:
    """Verify a whole chain from version 1 and return its head; raise DeviceListError.

    `pinned`: the (version, hash) this client verified before. The chain must still contain that
    exact entry, so the server can neither roll the list back nor fork it."""
    if not entries:
        raise DeviceListError(f"{username!r} has no signed device list")
    previous: DeviceListEntry | None = None
    previous_hash = GENESIS_PREV_HASH
    hashes: list[bytes] = []
    for index, entry in enumerate(entries):
        if entry.version != index + 1:
            raise DeviceListError(f"expected version {index + 1}, got {entry.version}")
        if entry.prev_hash != previous_hash:
            raise DeviceListError(f"version {entry.version} does not follow version {index}")
        try:
            signed = device_list_entry_bytes(username=username, entry=entry)
        except ValueError as exc:
            raise DeviceListError(f"version {entry.version} is malformed: {exc}") from None
        if not ed25519_verify(identity_public_key, entry.signature, signed):
            raise DeviceListError(f"version {entry.version} is not signed by {username!r}'s identity key")
        _check_step(previous, entry)
        previous = entry
        previous_hash = hashlib.sha256(DEVICE_LIST_HASH_LABEL + signed).digest()
        hashes.append(previous_hash)
    assert previous is not None
    if pinned is not None:
        version, digest = pinned
        if version > len(entries):
            raise DeviceListError(f"rolled back: this client saw version {version}, the server shows {len(entries)}")
        if hashes[version - 1] != digest:
            raise DeviceListError(f"forked: version {version} differs from the one this client saw")
    return VerifiedDeviceList(
        version=previous.version,
        hash=previous_hash,
        devices={d.device_id: d for d in previous.devices},
        entries=tuple(entries),
        hashes=tuple(hashes),
    )
