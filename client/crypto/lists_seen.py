"""The device lists a message's sender saw (docs/protocol.md 2.19). Pure: no I/O.

Each message names, per member of its conversation, the version and hash of that member's signed
device list (2.9) its sender had verified, and its signed header binds their hash. A receiver
checks every one against the lists it verified itself, so a server that shows two members
different lists of the same account is caught on the next message either of them sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from client.crypto.device_list import MAX_VERSION
from client.crypto.encoding import str16, u16, u32
from client.crypto.labels import DEVICE_LISTS_SEEN_LABEL

HASH_BYTES = 32
# The server stores at most this many bytes per message (protocol.md 4.4): about 1,400 members.
LISTS_SEEN_MAX_BYTES = 65_536
_MAX_VERSION = MAX_VERSION  # device list versions, 1 .. 2**31 - 1 (u32 on the wire)


@dataclass(frozen=True)
class ListSeen:
    """One member's signed device list as the sender had verified it."""

    username: str
    version: int
    hash: bytes


def lists_seen_encode(lists: Iterable[ListSeen]) -> bytes:
    """`u16(m) || m times (str16(username) || u32(version) || device_list_hash)`, members in
    ascending order of their UTF-8 usernames. Raises ValueError for no member, a duplicate, a
    version outside 1 .. 2^32 - 1, a hash that is not 32 bytes, or more than the size limit."""
    ordered = sorted(lists, key=lambda seen: seen.username.encode("utf-8"))
    if not ordered:
        raise ValueError("a message names the device list of at least its sender's account")
    parts = [u16(len(ordered))]
    previous: bytes | None = None
    for seen in ordered:
        name = seen.username.encode("utf-8")
        if name == previous:
            raise ValueError(f"{seen.username!r} is listed twice")
        previous = name
        if not 1 <= seen.version <= _MAX_VERSION or len(seen.hash) != HASH_BYTES:
            raise ValueError(f"the device list of {seen.username!r} has a bad version or hash")
        parts += [str16(seen.username), u32(seen.version), seen.hash]
    data = b"".join(parts)
    if len(data) > LISTS_SEEN_MAX_BYTES:
        raise ValueError(f"the device lists seen take {len(data)} bytes, more than {LISTS_SEEN_MAX_BYTES}")
    return data


def lists_seen_decode(data: bytes) -> tuple[ListSeen, ...]:
    """Inverse of `lists_seen_encode`, strict: exactly one encoding per value is accepted (no
    trailing bytes, strictly ascending usernames, valid UTF-8); ValueError otherwise."""
    if not 2 <= len(data) <= LISTS_SEEN_MAX_BYTES:
        raise ValueError("the device lists seen are empty or too long")
    count = int.from_bytes(data[:2], "big")
    offset = 2
    result: list[ListSeen] = []
    for _ in range(count):
        if offset + 2 > len(data):
            raise ValueError("truncated")
        length = int.from_bytes(data[offset : offset + 2], "big")
        end = offset + 2 + length + 4 + HASH_BYTES
        if end > len(data):
            raise ValueError("truncated")
        username = data[offset + 2 : offset + 2 + length].decode("utf-8")  # UnicodeDecodeError is a ValueError
        version = int.from_bytes(data[offset + 2 + length : offset + 6 + length], "big")
        result.append(ListSeen(username, version, data[end - HASH_BYTES : end]))
        offset = end
    if offset != len(data):
        raise ValueError("trailing bytes")
    if lists_seen_encode(result) != data:  # catches no member, order, duplicates and version 0
        raise ValueError("not the canonical encoding")
    return tuple(result)


def lists_seen_hash(data: bytes) -> bytes:
    """`device_lists_hash` of the message header (2.3): SHA-256 over the label and the encoding."""
    return hashlib.sha256(DEVICE_LISTS_SEEN_LABEL + data).digest()
