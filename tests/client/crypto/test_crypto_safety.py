"""Safety numbers (protocol.md 2.4)."""

from __future__ import annotations

import hashlib

import pytest

from client.crypto.safety import fingerprint, format_safety_number, safety_number

KEY_A, KEY_B = bytes(range(32)), bytes(range(32, 64))
# Computed once with `_reference_fingerprint` below and pinned, so that a change to either
# implementation (or to the spec reading they share) shows up.
KNOWN_FINGERPRINT_ALICE = "878952523748391029625406228657"
KNOWN_FINGERPRINT_BOB = "237188684282696781030151187746"


def _reference_fingerprint(username: str, key: bytes) -> str:
    """Straight from the spec text, written independently of client.crypto.safety."""
    h = hashlib.sha512(b"\x00\x00" + key + username.encode("utf-8")).digest()
    for _ in range(5199):
        h = hashlib.sha512(h + key).digest()
    return "".join(str(int.from_bytes(h[5 * i : 5 * i + 5], "big") % 100000).zfill(5) for i in range(6))


def test_fingerprint_known_answers() -> None:
    assert _reference_fingerprint("alice", KEY_A) == KNOWN_FINGERPRINT_ALICE
    assert _reference_fingerprint("bob", KEY_B) == KNOWN_FINGERPRINT_BOB
    assert fingerprint("alice", KEY_A) == KNOWN_FINGERPRINT_ALICE
    assert fingerprint("bob", KEY_B) == KNOWN_FINGERPRINT_BOB


def test_fingerprint_matches_the_reference_for_non_ascii_usernames() -> None:
    assert fingerprint("zoë", KEY_B) == _reference_fingerprint("zoë", KEY_B)


def test_safety_number_known_answer_puts_the_smaller_fingerprint_first() -> None:
    expected = KNOWN_FINGERPRINT_BOB + KNOWN_FINGERPRINT_ALICE
    assert safety_number("alice", KEY_A, "bob", KEY_B) == expected


def test_safety_number_is_symmetric_and_60_digits() -> None:
    forward = safety_number("alice", KEY_A, "bob", KEY_B)
    assert forward == safety_number("bob", KEY_B, "alice", KEY_A)
    assert len(forward) == 60 and forward.isdigit()


@pytest.mark.parametrize(
    "changed",
    [
        ("alice", bytes([1]) + KEY_A[1:], "bob", KEY_B),  # alice's key changed
        ("alice", KEY_A, "bob", KEY_B[:-1] + b"\xff"),  # bob's key changed
        ("alicia", KEY_A, "bob", KEY_B),  # the key now claims another username
    ],
)
def test_safety_number_changes_when_either_side_changes(changed: tuple[str, bytes, str, bytes]) -> None:
    assert safety_number(*changed) != safety_number("alice", KEY_A, "bob", KEY_B)


def test_format_safety_number_makes_12_groups_of_5() -> None:
    formatted = format_safety_number("0123456789" * 6)
    assert formatted == " ".join(["01234", "56789"] * 6)
    assert [len(group) for group in formatted.split(" ")] == [5] * 12


@pytest.mark.parametrize("number", ["1" * 59, "1" * 61, "1" * 59 + "a", "１" * 60])  # noqa: RUF001 - a non-ASCII digit on purpose
def test_format_safety_number_refuses_anything_but_60_ascii_digits(number: str) -> None:
    with pytest.raises(ValueError):
        format_safety_number(number)


def test_fingerprint_refuses_a_key_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        fingerprint("alice", KEY_A[:31])
