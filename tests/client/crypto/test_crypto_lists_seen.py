"""The device lists a sender saw (protocol.md 2.19): the encoding, its strictness and the vector."""

from __future__ import annotations

import hashlib

import pytest

from client.crypto.lists_seen import (
    LISTS_SEEN_MAX_BYTES,
    ListSeen,
    lists_seen_decode,
    lists_seen_encode,
    lists_seen_hash,
)

ALICE_V2_HASH = bytes.fromhex("fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a")
VECTOR_LISTS = (ListSeen("alice", 2, ALICE_V2_HASH), ListSeen("bob", 1, b"\xbb" * 32))
VECTOR_BYTES = (
    "00020005616c69636500000002fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a"
    "0003626f6200000001bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)
VECTOR_HASH = "6ab341a63260fd868b14fef4c768ddaa29c4a01852581329ea9cc53eae90bbe2"


def test_vector_of_the_spec() -> None:
    data = lists_seen_encode(reversed(VECTOR_LISTS))  # any input order: the encoding sorts
    assert data.hex() == VECTOR_BYTES
    assert lists_seen_hash(data).hex() == VECTOR_HASH
    assert lists_seen_decode(data) == VECTOR_LISTS


def test_independent_reading_of_the_spec() -> None:
    """u16(m), then per member str16(username) || u32(version) || hash; SHA-256 with the label."""
    rebuilt = (2).to_bytes(2, "big")
    for name, version, digest in (("alice", 2, ALICE_V2_HASH), ("bob", 1, b"\xbb" * 32)):
        rebuilt += len(name).to_bytes(2, "big") + name.encode() + version.to_bytes(4, "big") + digest
    assert rebuilt.hex() == VECTOR_BYTES
    assert hashlib.sha256(b"e2ee-msg/v1/device-lists-seen" + rebuilt).hexdigest() == VECTOR_HASH


def test_members_are_ordered_by_utf8_bytes_not_by_code_points_of_python_strings() -> None:
    # "Z" (0x5a) sorts before "a" (0x61); "é" (0xc3 0xa9) after both.
    data = lists_seen_encode([ListSeen("é", 1, bytes(32)), ListSeen("a", 1, bytes(32)), ListSeen("Z", 1, bytes(32))])
    assert [seen.username for seen in lists_seen_decode(data)] == ["Z", "a", "é"]


@pytest.mark.parametrize(
    "lists",
    [
        [],
        [ListSeen("a", 1, bytes(32)), ListSeen("a", 2, bytes(32))],
        [ListSeen("a", 0, bytes(32))],
        [ListSeen("a", 2**31, bytes(32))],
        [ListSeen("a", 1, bytes(31))],
    ],
)
def test_encode_refuses_what_has_no_encoding(lists: list[ListSeen]) -> None:
    with pytest.raises(ValueError):
        lists_seen_encode(lists)


def _vector() -> bytes:
    return bytes.fromhex(VECTOR_BYTES)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x00",  # no member
        _vector()[:-1],  # truncated
        _vector() + b"\x00",  # trailing byte
        b"\x00\x03" + _vector()[2:],  # more members announced than present
        # out of order: bob before alice
        b"\x00\x02" + _vector()[2 + 2 + 5 + 4 + 32 :] + _vector()[2 : 2 + 2 + 5 + 4 + 32],
        # version 0
        b"\x00\x01\x00\x01a\x00\x00\x00\x00" + bytes(32),
        # invalid UTF-8 username
        b"\x00\x01\x00\x01\xff\x00\x00\x00\x01" + bytes(32),
        b"\x00\x01" + (b"\x00\x01a\x00\x00\x00\x01" + bytes(32)) * 2,  # the same member twice
    ],
)
def test_decode_accepts_only_the_canonical_encoding(data: bytes) -> None:
    with pytest.raises(ValueError):
        lists_seen_decode(data)


def test_size_is_bounded_as_the_server_bounds_it() -> None:
    lists = [ListSeen(f"member-{i:05d}", 1, bytes(32)) for i in range(1500)]
    with pytest.raises(ValueError):
        lists_seen_encode(lists)
    fitting = lists_seen_encode(lists[:1300])
    assert len(fitting) <= LISTS_SEEN_MAX_BYTES
