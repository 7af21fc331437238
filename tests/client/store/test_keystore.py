"""The key store file: sealed, 0600, atomically replaced, and refusing anything altered."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.crypto.errors import KeystoreError
from client.store import keystore

N = 2**10
SECRETS: dict[str, Any] = {"device": {"x25519_private_key": "c2VjcmV0"}, "token": "tök", "pins": {}}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "keystore.json"
    keystore.save(path, "passphrase", SECRETS, n=N)
    return path


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_round_trip(saved: Path) -> None:
    assert keystore.load(saved, "passphrase") == SECRETS


def test_file_mode_is_0600_even_under_a_permissive_umask(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "keystore.json"
    keystore.save(path, "passphrase", SECRETS, n=N)
    assert _mode(path) == 0o600


def test_replacing_a_wider_file_leaves_0600_and_no_temporary_files(saved: Path) -> None:
    saved.chmod(0o644)
    keystore.save(saved, "new passphrase", {"v": 2}, n=N)
    assert _mode(saved) == 0o600
    assert keystore.load(saved, "new passphrase") == {"v": 2}
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_file_holds_no_plaintext(saved: Path) -> None:
    text = saved.read_text()
    assert "c2VjcmV0" not in text and "tök" not in text and "t\\u00f6k" not in text
    assert json.loads(text)["format"] == "e2ee-msg-keystore"


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        keystore.save(saved, "passphrase", {"v": "new"}, n=N)
    monkeypatch.undo()
    assert keystore.load(saved, "passphrase") == SECRETS
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_wrong_passphrase_raises_keystore_error(saved: Path) -> None:
    with pytest.raises(KeystoreError):
        keystore.load(saved, "Passphrase")


def test_every_single_flipped_byte_in_the_file_is_refused(saved: Path) -> None:
    original = saved.read_bytes()
    assert len(original) > 100
    for index in range(len(original)):
        altered = bytearray(original)
        altered[index] ^= 0x01
        saved.write_bytes(bytes(altered))
        with pytest.raises(KeystoreError):
            keystore.load(saved, "passphrase")


def test_missing_file_raises_keystore_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(KeystoreError, match=r"absent\.json"):
        keystore.load(path, "passphrase")


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b"\xff\xfe", b'{"format": "e2ee-msg-keystore"}'])
def test_a_file_that_is_not_a_key_store_raises_keystore_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keystore.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreError):
        keystore.load(path, "passphrase")


def test_a_directory_in_place_of_the_file_raises_keystore_error(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError):
        keystore.load(tmp_path, "passphrase")


def test_default_cost_is_scrypt_n_32768(tmp_path: Path) -> None:
    """The one test at production cost (about 0.1 s)."""
    path = tmp_path / "keystore.json"
    keystore.save(path, "passphrase", SECRETS)
    assert json.loads(path.read_text())["kdf"]["n"] == 32768
    assert keystore.load(path, "passphrase") == SECRETS
