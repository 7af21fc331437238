"""Byte encodings of docs/protocol.md "Conventions": strict base64 and fixed-width integers.

Base64 is strict on purpose: the server rejects anything but canonical standard base64 with
padding, and a client that accepted more would let two different strings name the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import uuid


def b64e(data: bytes) -> str:
    """Standard base64 (RFC 4648 section 4) with padding."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, *, length: int | None = None) -> bytes:
    """Decode canonical standard base64 with padding; raise ValueError on anything else.

    Rejected: URL-safe alphabet, missing padding, whitespace, non-ASCII, non-zero trailing bits
    and, if `length` is given, a decoded length other than `length`.
    """
    if not isinstance(text, str):
        raise ValueError(f"base64 value must be a string, not {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None
    # b64decode ignores non-zero trailing bits ("AB==" and "AA==" both decode to b"\x00");
    # re-encoding is the simplest exact canonicality check.
    if b64e(data) != text:
        raise ValueError("non-canonical base64")
    if length is not None and len(data) != length:
        raise ValueError(f"expected {length} bytes, got {len(data)}")
    return data


def _uint(value: int, size: int) -> bytes:
    # bool is an int subclass; a stray True in a length field is a bug, not the number 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value} does not fit in an unsigned {8 * size}-bit integer")
    return value.to_bytes(size, "big")


def u8(value: int) -> bytes:
    """Unsigned 8-bit big-endian integer."""
    return _uint(value, 1)


def u16(value: int) -> bytes:
    """Unsigned 16-bit big-endian integer."""
    return _uint(value, 2)


def u32(value: int) -> bytes:
    """Unsigned 32-bit big-endian integer."""
    return _uint(value, 4)


def str16(text: str) -> bytes:
    """`u16(len(utf8(s))) || utf8(s)`; the length prefix keeps concatenations unambiguous."""
    data = text.encode("utf-8")  # strict: lone surrogates raise UnicodeEncodeError (a ValueError)
    return u16(len(data)) + data


def uuid_bytes(value: uuid.UUID) -> bytes:
    """The 16 raw bytes of a UUID in RFC 9562 byte order."""
    if not isinstance(value, uuid.UUID):
        raise ValueError(f"expected a uuid.UUID, got {type(value).__name__}")
    return value.bytes
