"""Project Wycheproof vectors through the project's own primitive wrappers (and the library).

Every test counts the cases it ran and asserts the count, so a vector file that was silently
read as empty, or a filter that matched nothing, fails instead of passing vacuously.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.crypto.keys import DeviceKeyPair, ed25519_verify
from client.crypto.symmetric import aes256gcm_open, aes256gcm_seal, hkdf_sha256
from client.crypto.wrap import chatkey_wrap

Loader = Callable[[str], dict[str, Any]]


def _cases(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def _hex(test: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(test[name])


# -- AES-GCM --------------------------------------------------------------------------------------


def test_aes256gcm_96bit_iv_groups_through_the_protocols_aead_functions(wycheproof: Loader) -> None:
    """The exact AEAD usage of messages and the key store: AES-256, 96-bit nonce, 128-bit tag."""
    outcomes: Counter[str] = Counter()
    failures: list[int] = []
    for group, test in _cases(wycheproof("aes_gcm_test")):
        if group["keySize"] != 256 or group["ivSize"] != 96:
            continue
        assert group["tagSize"] == 128
        key, iv, aad, msg = (_hex(test, f) for f in ("key", "iv", "aad", "msg"))
        sealed = _hex(test, "ct") + _hex(test, "tag")
        if test["result"] == "valid":
            ok = aes256gcm_seal(key, iv, msg, aad) == sealed and aes256gcm_open(key, iv, sealed, aad) == msg
        else:
            try:
                aes256gcm_open(key, iv, sealed, aad)
                ok = False
            except InvalidTag:
                ok = True
        outcomes[test["result"]] += 1
        if not ok:
            failures.append(test["tcId"])
    assert failures == []
    assert outcomes == {"valid": 39, "invalid": 27}


def test_aes_gcm_whole_file_through_aesgcm(wycheproof: Loader) -> None:
    """All key sizes and every IV length AESGCM supports (8..128 bytes); a zero IV is refused."""
    outcomes: Counter[str] = Counter()
    failures: list[int] = []
    for group, test in _cases(wycheproof("aes_gcm_test")):
        iv_bits = group["ivSize"]
        if iv_bits != 0 and not 64 <= iv_bits <= 1024:
            outcomes["skipped"] += 1
            continue
        key, iv, aad, msg = (_hex(test, f) for f in ("key", "iv", "aad", "msg"))
        sealed = _hex(test, "ct") + _hex(test, "tag")
        aead = AESGCM(key)
        if test["result"] == "valid":
            ok = aead.encrypt(iv, msg, aad) == sealed and aead.decrypt(iv, sealed, aad) == msg
        else:
            try:
                aead.decrypt(iv, sealed, aad)
                ok = False
            except (InvalidTag, ValueError):  # ValueError: the zero-length IV is refused outright
                ok = True
        outcomes[test["result"]] += 1
        if not ok:
            failures.append(test["tcId"])
    assert failures == []
    assert outcomes == {"valid": 202, "invalid": 87, "skipped": 27}


def test_aes256gcm_functions_refuse_nonces_and_keys_the_protocol_does_not_use() -> None:
    with pytest.raises(ValueError):
        aes256gcm_seal(bytes(32), bytes(16), b"", b"")
    with pytest.raises(ValueError):
        aes256gcm_open(bytes(16), bytes(12), bytes(16), b"")


# -- X25519 ---------------------------------------------------------------------------------------


def _x25519(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def test_x25519_vectors(wycheproof: Loader) -> None:
    outcomes: Counter[str] = Counter()
    failures: list[int] = []
    for _, test in _cases(wycheproof("x25519_test")):
        private, public, shared = (_hex(test, f) for f in ("private", "public", "shared"))
        zero_shared = "ZeroSharedSecret" in test["flags"]
        try:
            result: bytes | None = _x25519(private, public)
        except ValueError:
            result = None
        if test["result"] == "valid":
            ok, outcome = result == shared, "valid"
        elif zero_shared:
            ok, outcome = result is None, "zero_shared_rejected"
        else:  # acceptable: may refuse, but what it accepts must be right
            ok = result is None or result == shared
            outcome = "acceptable_accepted" if result is not None else "acceptable_rejected"
        outcomes[outcome] += 1
        if not ok:
            failures.append(test["tcId"])
    assert failures == []
    assert outcomes["valid"] == 264
    assert outcomes["zero_shared_rejected"] == 31
    assert outcomes["acceptable_accepted"] + outcomes["acceptable_rejected"] == 223


def test_chatkey_wrap_refuses_every_public_key_giving_a_zero_shared_secret(wycheproof: Loader) -> None:
    """RFC 9180 7.1.4: a DH result of all zeros must abort; wrapping to such a key must fail."""
    low_order = {test["public"] for _, test in _cases(wycheproof("x25519_test")) if "ZeroSharedSecret" in test["flags"]}
    assert len(low_order) == 14  # distinct encodings of low-order points among the 31 cases
    wrapper = DeviceKeyPair.generate()
    for public_hex in sorted(low_order):
        with pytest.raises(ValueError):
            chatkey_wrap(
                chat_key=bytes(32),
                conversation_id=uuid.uuid4(),
                epoch=1,
                recipient_device_id=uuid.uuid4(),
                recipient_x25519_public_key=bytes.fromhex(public_hex),
                wrapper=wrapper,
            )


# -- Ed25519 --------------------------------------------------------------------------------------


def test_ed25519_vectors_through_ed25519_verify(wycheproof: Loader) -> None:
    outcomes: Counter[str] = Counter()
    failures: list[int] = []
    for group, test in _cases(wycheproof("ed25519_test")):
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        verified = ed25519_verify(public_key, _hex(test, "sig"), _hex(test, "msg"))
        outcomes[test["result"]] += 1
        if verified != (test["result"] == "valid"):
            failures.append(test["tcId"])
    assert failures == []
    assert outcomes == {"valid": 88, "invalid": 63}


# -- HKDF-SHA256 ----------------------------------------------------------------------------------


def test_hkdf_sha256_vectors_through_hkdf_sha256(wycheproof: Loader) -> None:
    outcomes: Counter[str] = Counter()
    failures: list[int] = []
    for _, test in _cases(wycheproof("hkdf_sha256_test")):
        ikm, salt, info = (_hex(test, f) for f in ("ikm", "salt", "info"))
        try:
            okm: bytes | None = hkdf_sha256(ikm, salt, info, test["size"])
        except ValueError:
            okm = None
        ok = okm == _hex(test, "okm") if test["result"] == "valid" else okm is None
        outcomes[test["result"]] += 1
        if not ok:
            failures.append(test["tcId"])
    assert failures == []
    assert outcomes == {"valid": 83, "invalid": 3}
