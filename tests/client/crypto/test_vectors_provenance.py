"""The vendored vectors are the published ones: pinned hashes, and equal to the reference copy."""

from __future__ import annotations

import hashlib

import pytest

from tests.client.crypto.conftest import _repo_root

VENDORED = _repo_root() / "tests" / "vectors"
REFERENCE = _repo_root().parent / "shared" / "vectors"

# SHA-256 of each file as published (Wycheproof byte-identical upstream, HPKE filtered as the
# README says). A file edited by hand, even whitespace, fails here before any vector test runs.
PINNED = {
    "wycheproof/aes_gcm_test.json": "985e5ecc172e181eaf49e89508b9470dcf478002eb7e8559c707eb42dc97dfe7",
    "wycheproof/ed25519_test.json": "752d2ea7d7c6cf4736381b6cbacb61f8182b126ab7cd9b058f00c50084975536",
    "wycheproof/hkdf_sha256_test.json": "bb2b462a38b251cb52a2aede706d6d4b62b26864f4e80c95497507ddb07c5f1e",
    "wycheproof/x25519_test.json": "35c3f5231cf25cc640b524d403461deee9e49441d5d915a3a25b2c8ff5adbe7d",
    "hpke/test-vectors.json": "9828baae14ae57d6630d70bd4eabfb147044e2efc0e5df2d5d9b049837ee4262",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vendored_vector_file_has_its_published_hash(name: str) -> None:
    assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == PINNED[name]


@pytest.mark.parametrize("source", ["wycheproof", "hpke"])
def test_each_vendored_source_carries_its_licence(source: str) -> None:
    assert (VENDORED / source / "LICENSE").stat().st_size > 1000


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vendored_vector_file_equals_the_reference_copy(name: str) -> None:
    reference = REFERENCE / name
    if not reference.is_file():
        pytest.skip("no reference copy beside the checkout (a clone on its own): the pinned hash stands")
    assert (VENDORED / name).read_bytes() == reference.read_bytes()
