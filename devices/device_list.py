"""The signed device list's byte encoding (protocol.md 2.9), so the server can keep the hash chain
it stores intact: it refuses an entry whose `prev_hash` is not the hash of the current head.

The server cannot check the signature (it has no keys and imports no cryptography); clients do.
This is the same encoding as `client/crypto/device_list.py`, written again on purpose: the two
sides share no code, and the test vectors of protocol.md 2.9 hold both to it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from common.protocol import PROTOCOL_VERSION

DEVICE_LIST_LABEL = b"e2ee-msg/v1/device-list"
DEVICE_LIST_HASH_LABEL = b"e2ee-msg/v1/device-list-hash"
CHANGE_CODES = {"created": 1, "linked": 2, "revoked": 3}
GENESIS_PREV_HASH = bytes(32)


@dataclass(frozen=True)
class ListedDevice:
    device_id: uuid.UUID
    x25519_public_key: bytes
    ed25519_public_key: bytes
    name: str


@dataclass(frozen=True)
class DeviceListEntryData:
    """One entry as uploaded: the signed fields and the identity key's signature."""

    version: int
    prev_hash: bytes
    change: str
    subject_device_id: uuid.UUID
    actor_device_id: uuid.UUID
    timestamp_ms: int
    devices: tuple[ListedDevice, ...]
    signature: bytes


def _str16(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def device_list_entry_bytes(*, username: str, entry: DeviceListEntryData) -> bytes:
    """The bytes the identity key signs (protocol.md 2.9 `device_list_entry`)."""
    parts = [
        DEVICE_LIST_LABEL,
        PROTOCOL_VERSION.to_bytes(1, "big"),
        _str16(username),
        entry.version.to_bytes(4, "big"),
        entry.prev_hash,
        CHANGE_CODES[entry.change].to_bytes(1, "big"),
        entry.subject_device_id.bytes,
        entry.actor_device_id.bytes,
        entry.timestamp_ms.to_bytes(8, "big"),
        len(entry.devices).to_bytes(2, "big"),
    ]
    for device in entry.devices:
        parts += [device.device_id.bytes, device.x25519_public_key, device.ed25519_public_key, _str16(device.name)]
    return b"".join(parts)


def device_list_entry_hash(*, username: str, entry: DeviceListEntryData) -> bytes:
    """`device_list_hash` (32 bytes): what the next entry's `prev_hash` must be."""
    return hashlib.sha256(DEVICE_LIST_HASH_LABEL + device_list_entry_bytes(username=username, entry=entry)).digest()
