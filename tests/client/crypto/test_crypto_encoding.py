"""Encodings of protocol.md "Conventions": strict base64 and fixed-width integers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from client.crypto.encoding import b64d, b64e, str16, u8, u16, u32, uuid_bytes


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))])
def test_base64_round_trip(data: bytes) -> None:
    assert b64d(b64e(data)) == data


def test_b64e_is_standard_alphabet_with_padding() -> None:
    assert b64e(b"\xfb\xff") == "+/8="


@pytest.mark.parametrize(
    "text",
    [
        "-_8=",  # URL-safe alphabet
        "+/8",  # missing padding
        "+/8==",  # extra padding
        "+/9=",  # non-zero trailing bits (decodes to the same bytes as "+/8=")
        "AB==",  # non-zero trailing bits
        " +/8=",
        "+/8=\n",
        "+/\n8=",
        "+/8=é",
        "====",
    ],
)
def test_b64d_rejects_non_canonical_input(text: str) -> None:
    with pytest.raises(ValueError):
        b64d(text)


@pytest.mark.parametrize("value", [b"+/8=", None, 5])
def test_b64d_rejects_non_strings(value: Any) -> None:
    with pytest.raises(ValueError):
        b64d(value)


def test_b64d_checks_the_length_when_asked() -> None:
    assert b64d(b64e(bytes(16)), length=16) == bytes(16)
    with pytest.raises(ValueError):
        b64d(b64e(bytes(15)), length=16)


def test_integers_are_big_endian_and_fixed_width() -> None:
    assert u8(0xAB) == b"\xab"
    assert u16(0x0102) == b"\x01\x02"
    assert u32(0x01020304) == b"\x01\x02\x03\x04"
    assert u32(0) == bytes(4) and u32(2**32 - 1) == b"\xff" * 4


@pytest.mark.parametrize(
    ("packer", "value"),
    [(u8, 256), (u8, -1), (u16, 65536), (u32, 2**32), (u32, -1), (u8, True), (u32, 1.0), (u16, "1")],
)
def test_integers_out_of_range_or_not_int_are_refused(packer: Any, value: Any) -> None:
    with pytest.raises(ValueError):
        packer(value)


def test_str16_is_a_length_prefixed_utf8_string() -> None:
    assert str16("") == b"\x00\x00"
    assert str16("é") == b"\x00\x02\xc3\xa9"
    assert len(str16("x" * 65535)) == 65537
    with pytest.raises(ValueError):
        str16("x" * 65536)
    with pytest.raises(ValueError):
        str16("\ud800")


def test_uuid_bytes_are_rfc9562_order() -> None:
    value = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert uuid_bytes(value) == bytes.fromhex("00112233445566778899aabbccddeeff")
    with pytest.raises(ValueError):
        uuid_bytes(str(value))  # type: ignore[arg-type]
