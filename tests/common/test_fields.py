from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from rest_framework import serializers

from common.fields import Base64Field, CanonicalUUIDField, StrictCharField, StrictIntegerField


def _run(field: serializers.Field[Any, Any, Any, Any], value: Any) -> Any:
    return field.run_validation(value)


@pytest.mark.parametrize(
    "value",
    [
        "AAEC",  # standard, unpadded length multiple of 4
        "AAE=",
        "AA==",
        "+/+/",
    ],
)
def test_base64_accepts_canonical_standard_encoding(value: str) -> None:
    assert _run(Base64Field(), value) == base64.b64decode(value)


@pytest.mark.parametrize(
    "value",
    [
        "-_-_",  # URL-safe alphabet
        "AA",  # missing padding
        "AA=",  # short padding
        "AA==\n",  # trailing newline
        "AA ==",  # whitespace inside
        " AA==",
        "AB==",  # non-canonical trailing bits (decodes like "AA==")
        "QR==",
        "é===",  # non-ASCII
        "====",
        12,
        None,
        ["AA=="],
        {"b": "AA=="},
        True,
    ],
)
def test_base64_rejects_anything_but_canonical_standard_base64(value: Any) -> None:
    with pytest.raises(serializers.ValidationError):
        _run(Base64Field(), value)


def test_base64_checks_decoded_lengths() -> None:
    assert _run(Base64Field(length=3), "AAEC") == b"\x00\x01\x02"
    with pytest.raises(serializers.ValidationError, match="exactly 4 bytes"):
        _run(Base64Field(length=4), "AAEC")
    with pytest.raises(serializers.ValidationError, match="at least 4 bytes"):
        _run(Base64Field(min_length=4), "AAEC")
    with pytest.raises(serializers.ValidationError, match="at most 2 bytes"):
        _run(Base64Field(max_length=2), "AAEC")


def test_base64_renders_memoryview_from_postgresql() -> None:
    assert Base64Field().to_representation(memoryview(b"\x00\x01\x02")) == "AAEC"


@pytest.mark.parametrize("value", ["1", 1.0, True, None, [1], {"a": 1}])
def test_strict_integer_rejects_other_json_types(value: Any) -> None:
    with pytest.raises(serializers.ValidationError):
        _run(StrictIntegerField(), value)


def test_strict_integer_accepts_integers_within_bounds() -> None:
    assert _run(StrictIntegerField(min_value=0, max_value=5), 5) == 5
    with pytest.raises(serializers.ValidationError):
        _run(StrictIntegerField(min_value=0, max_value=5), 6)


@pytest.mark.parametrize("value", [5, 1.5, True, None, ["a"], {"a": "b"}, "\ud800", "a\x00b", ""])
def test_strict_char_rejects_non_strings_lone_surrogates_and_nul(value: Any) -> None:
    with pytest.raises(serializers.ValidationError):
        _run(StrictCharField(), value)


def test_strict_char_accepts_unicode_text() -> None:
    assert _run(StrictCharField(), "téléphone 📱") == "téléphone 📱"


@pytest.mark.parametrize(
    "value",
    [
        "6F1C0A0E-4C1E-4A8E-9D55-0B7B8C0F1E2A",  # uppercase
        "6f1c0a0e4c1e4a8e9d550b7b8c0f1e2a",  # no hyphens
        "{6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a}",
        "urn:uuid:6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a",
        "6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a\n",
        "not-a-uuid",
        12345,
        None,
    ],
)
def test_uuid_accepts_only_lowercase_hyphenated_form(value: Any) -> None:
    with pytest.raises(serializers.ValidationError):
        _run(CanonicalUUIDField(), value)


def test_uuid_parses_canonical_form() -> None:
    value = "6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a"
    assert _run(CanonicalUUIDField(), value) == uuid.UUID(value)
