"""Strict serializer fields: a value of the wrong JSON type is refused, never coerced.

DRF's own fields are lenient (`CharField` takes numbers, `IntegerField` takes "1", `UUIDField`
takes ints and brace forms). The protocol fixes one encoding per value, and a lenient parser would
let two different requests mean the same thing, so these fields accept exactly that encoding.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

from django.http import QueryDict
from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A JSON string, UTF-8 encodable (no lone surrogates: they break hashing and the database),
    taken as sent: no whitespace trimming (a trimmed value is not the one the schema checked, so
    " " passed minLength 1 and was then refused as blank)."""

    default_error_messages = {
        "not_a_string": "Must be a string.",
        "not_utf8": "Must be valid Unicode text.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("not_utf8")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a string, float or boolean)."""

    default_error_messages = {"not_an_integer": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer")
        return int(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false (not "true", 1 or "yes")."""

    default_error_messages = {"not_a_boolean": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CanonicalUUIDField(serializers.Field[uuid.UUID, str, str, Any]):
    """A UUID in its lowercase hyphenated form, the only form protocol.md allows in JSON."""

    default_error_messages = {"invalid": "Must be a UUID in lowercase hyphenated form."}

    def to_internal_value(self, data: Any) -> uuid.UUID:
        if not isinstance(data, str) or not _CANONICAL_UUID.fullmatch(data):
            self.fail("invalid")
        return uuid.UUID(data)

    def to_representation(self, value: uuid.UUID) -> str:
        return str(value)


class Base64Field(serializers.Field[bytes, str, str, Any]):
    """Binary data as standard base64 with padding, canonical (RFC 4648 section 4).

    Decoding with `validate=True` refuses characters outside the alphabet (URL-safe ones,
    whitespace) and bad padding; re-encoding must give back the input, which refuses
    non-canonical trailing bits. Lengths are of the decoded bytes.
    """

    default_error_messages = {
        "invalid": "Must be standard base64 with padding.",
        "length": "Must decode to exactly {length} bytes.",
        "min_length": "Must decode to at least {min_length} bytes.",
        "max_length": "Must decode to at most {max_length} bytes.",
    }

    def __init__(
        self,
        *,
        length: int | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.length = length
        self.min_length = min_length
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> bytes:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
            self.fail("invalid")
        if base64.b64encode(raw).decode("ascii") != data:
            self.fail("invalid")
        if self.length is not None and len(raw) != self.length:
            self.fail("length", length=self.length)
        if self.min_length is not None and len(raw) < self.min_length:
            self.fail("min_length", min_length=self.min_length)
        if self.max_length is not None and len(raw) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return raw

    def to_representation(self, value: bytes | memoryview) -> str:
        # PostgreSQL hands BinaryField values back as memoryview, SQLite as bytes.
        return base64.b64encode(bytes(value)).decode("ascii")


def query_values(query: QueryDict) -> dict[str, str]:
    """The query string as one value per name, for a query serializer's `data`.

    DRF reads a QueryDict as a form: an empty value (`after=`) counts as absent and falls back to
    the default, and of a name given twice the last silently wins. The schema promises neither, so
    here an empty value is a value (and refused as such by its field) and a repeated name is a 400.
    """
    repeated = sorted(name for name, values in query.lists() if len(values) > 1)
    if repeated:
        raise serializers.ValidationError({name: ["Give this parameter once."] for name in repeated})
    return {name: values[0] for name, values in query.lists()}
