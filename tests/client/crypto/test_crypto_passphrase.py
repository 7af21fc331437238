"""Passphrase sealing of the key store (protocol.md 2.5), without files. scrypt n=2**10 here."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from client.crypto.encoding import b64d, b64e
from client.crypto.errors import KeystoreError
from client.crypto.passphrase import open_with_passphrase, seal_with_passphrase

N = 2**10
SECRET = b'{"device": "secret bytes"}'


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return seal_with_passphrase("correct horse", SECRET, n=N)


def _opens(document: dict[str, Any], passphrase: str = "correct horse") -> bool:
    try:
        return open_with_passphrase(document, passphrase) == SECRET
    except KeystoreError:
        return False


def test_round_trip(document: dict[str, Any]) -> None:
    assert open_with_passphrase(document, "correct horse") == SECRET


def test_document_has_the_spec_shape(document: dict[str, Any]) -> None:
    assert set(document) == {"format", "version", "kdf", "nonce", "ciphertext"}
    assert (document["format"], document["version"]) == ("e2ee-msg-keystore", 1)
    kdf = document["kdf"]
    assert (kdf["name"], kdf["n"], kdf["r"], kdf["p"]) == ("scrypt", N, 8, 1)
    assert len(b64d(kdf["salt"])) == 16 and len(b64d(document["nonce"])) == 12
    assert len(b64d(document["ciphertext"])) == len(SECRET) + 16


def test_salt_then_nonce_come_from_the_injected_rng() -> None:
    stream = iter([b"S" * 16, b"N" * 12])
    document = seal_with_passphrase("pw", SECRET, rng=lambda n: next(stream), n=N)
    assert b64d(document["kdf"]["salt"]) == b"S" * 16 and b64d(document["nonce"]) == b"N" * 12


@pytest.mark.parametrize("passphrase", ["correct horsE", "", "correct horse "])
def test_wrong_passphrase_fails(document: dict[str, Any], passphrase: str) -> None:
    assert not _opens(document, passphrase)


def _flip_b64(value: str, index: int) -> str:
    raw = bytearray(b64d(value))
    raw[index] ^= 0x01
    return b64e(bytes(raw))


def _tamper(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return changed


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("kdf", "salt"), lambda v: _flip_b64(v, 0)),
        (("nonce",), lambda v: _flip_b64(v, 11)),
        (("ciphertext",), lambda v: _flip_b64(v, 0)),
        (("ciphertext",), lambda v: _flip_b64(v, -1)),
        (("ciphertext",), lambda v: b64e(b64d(v)[:-1])),
        (("kdf", "n"), 2 * N),
        (("kdf", "r"), 9),
        (("kdf", "p"), 2),
    ],
)
def test_any_modified_field_fails(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    assert not _opens(_tamper(document, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format",), "other"),
        (("version",), 2),
        (("version",), True),
        (("version",), _DELETE),
        (("extra",), 1),
        (("kdf", "name"), "argon2id"),
        (("kdf", "n"), 1000),  # not a power of two
        (("kdf", "n"), 2**30),  # would need 128 GiB: must be refused before allocating
        (("kdf", "n"), True),
        (("kdf", "n"), 1024.0),
        (("kdf", "r"), 0),
        (("kdf", "p"), 10**6),
        (("kdf", "salt"), "AAAA"),
        (("kdf", "salt"), None),
        (("nonce",), "not base64!"),
        (("kdf", "salt"), lambda v: v.rstrip("=")),  # missing padding
        (("nonce",), lambda v: v[:-4]),  # 9 bytes
        (("ciphertext",), ""),
        (("kdf",), "scrypt"),
    ],
)
def test_malformed_documents_raise_keystore_error(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(KeystoreError):
        open_with_passphrase(_tamper(document, path, value), "correct horse")


@pytest.mark.parametrize("document", [None, [], "text", {}])
def test_non_documents_raise_keystore_error(document: Any) -> None:
    with pytest.raises(KeystoreError):
        open_with_passphrase(document, "pw")


@pytest.mark.parametrize(
    ("n", "r", "p"), [(1000, 8, 1), (1, 8, 1), (2**21, 8, 1), (N, 0, 1), (N, 8, 0), (2**20, 16, 1)]
)
def test_seal_refuses_invalid_scrypt_parameters(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError):
        seal_with_passphrase("pw", SECRET, n=n, r=r, p=p)


def test_a_document_demanding_more_than_1_gib_of_scrypt_memory_is_refused(document: dict[str, Any]) -> None:
    """n and r are each within bounds, but 128 * r * n = 2 GiB: refuse before deriving."""
    greedy = _tamper(_tamper(document, ("kdf", "n"), 2**20), ("kdf", "r"), 16)
    with pytest.raises(KeystoreError, match="memory"):
        open_with_passphrase(greedy, "correct horse")
