"""Payload padding (protocol.md 2.3): 0x80 then zeros to a multiple of 64, strictly undone."""

from __future__ import annotations

import pytest

from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.message import pad, unpad


@pytest.mark.parametrize("length", range(0, 200))
def test_padded_length_is_the_smallest_multiple_of_64_above_the_payload(length: int) -> None:
    padded = pad(b"a" * length)
    assert len(padded) % 64 == 0
    assert len(padded) - 64 <= length < len(padded)
    assert padded == b"a" * length + b"\x80" + b"\x00" * (len(padded) - length - 1)


@pytest.mark.parametrize(
    "payload",
    [b"", b"{}", b"x" * 63, b"x" * 64, b"ends with marker \x80", b"ends with zeros \x00\x00", b"\x80" * 64, bytes(64)],
)
def test_round_trip(payload: bytes) -> None:
    assert unpad(pad(payload)) == payload


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        bytes(64),  # no marker at all
        b"a" * 64,  # no padding
        b"a" * 63 + b"\x81",  # wrong marker
        b"a" * 62 + b"\x80\x01",  # non-zero after the marker
        b"a\x80",  # not a multiple of 64
        b"a" * 64 + b"\x80",  # not a multiple of 64
        b"a\x80" + bytes(126),  # padding of 127 bytes: more than one block
        b"\x80" + bytes(127),  # empty payload padded to two blocks
    ],
)
def test_malformed_padding_is_tampered(padded: bytes) -> None:
    with pytest.raises(DecryptError) as caught:
        unpad(padded)
    assert caught.value.reason is DecryptFailure.TAMPERED
