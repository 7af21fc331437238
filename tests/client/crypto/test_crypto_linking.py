"""Linking and the signed device list (docs/protocol.md 2.9 to 2.12): the known-answer vectors of the
document, reproduced; then what a forged, reordered, rolled-back or forked list, a mistyped code, a
wrong secret or a moved wrapped identity key do (each is refused)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.crypto.device_list import (
    DeviceListEntry,
    DeviceListError,
    ListedDevice,
    device_list_entry_bytes,
    device_list_entry_hash,
    device_list_next,
    device_list_verify,
)
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.fingerprint import device_fingerprint_bytes
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.linking import (
    LinkCode,
    LinkCodeError,
    identity_key_unwrap,
    identity_key_wrap,
    link_approval_mac,
    link_approval_message,
    link_approval_verify,
    link_code_decode,
    link_code_encode,
    link_keys,
)

PROTOCOL_MD = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# The inputs of the vectors in protocol.md 2.13.
IDENTITY = IdentityKeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def _device(seed: int, device_id: str) -> DeviceKeyPair:
    return DeviceKeyPair(
        uuid.UUID(device_id),
        X25519PrivateKey.from_private_bytes(bytes([seed]) * 32),
        Ed25519PrivateKey.from_private_bytes(bytes([seed + 1]) * 32),
    )


LAPTOP = _device(0x11, "11111111-1111-4111-8111-111111111111")
PHONE = _device(0x22, "22222222-2222-4222-8222-222222222222")
SECRET = bytes(range(0xA0, 0xB0))
T1, T2 = 1764115200000, 1764115260000


def _listed(device: DeviceKeyPair, name: str) -> ListedDevice:
    return ListedDevice(device.device_id, device.x25519_public_key, device.ed25519_public_key, name)


def _chain() -> tuple[DeviceListEntry, DeviceListEntry]:
    first = device_list_next(
        identity=IDENTITY,
        username="alice",
        head=None,
        change="created",
        subject=_listed(LAPTOP, "laptop"),
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=T1,
    )
    second = device_list_next(
        identity=IDENTITY,
        username="alice",
        head=first,
        change="linked",
        subject=_listed(PHONE, "phone"),
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=T2,
    )
    return first, second


VECTORS = {
    "identity_public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
    "entry1_hash": "b0ca02aa03fa2dfd029464bb2e1a88874c7d26ae03f54eb9dc0e5e4d0092501a",
    "entry1_signature": "d74c40507e1d67ec8773b98ca6d7f4f3e318b50cf309339d46dee79525343cde"
    "4086c8054b13a666b5782c26e5dd65905546e9370ad8407aed9ff08c482bcf02",
    "entry2_hash": "fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a",
    "entry2_signature": "f74e76fa4e80a3497c3d103bb8d851b25aa3a9c3818087b6bcb9a09a106c4429"
    "39f8be80911ee4dedbeb339d99a68cdba7b51950adc4abdb2045d7d1e6504703",
    "fingerprint": "7973fd5cf83dfc84909e",
    "link_code": "AERC-EIRC-EIRE-EIUC-EIRC-EIRC-EIRH-S475-LT4D-37EE-SCPK-BINC-UOSK-LJVH-VCU2-VK5M-VWXK-7MEF",
    "verifier": "2650be4194ba1ecd422e28c04746b038c18846bc40b6863d36b0642042d95da3",
    "verifier_hash": "4d201c5274685eac1266226950b68d8cf7418726f6a7f3503db5eaf005eec128",
    "mac_key": "03bc319b367d5978f630e2bc65f92dca90140866123acf2a9c2590910e44dbc0",
    "wrapped_identity_key": "70a4a2c1ab8d027b9028e72f845f906abb84df9e44c20c8422e8cb8fbcd777625d244fb1f8f3e1c4"
    "d5938b31cde0c15b3723423b12b77b75133c1b002dfcd998b1ad084263ff3044bbee2680e3fa1dee",
    "approval_mac": "b81d81531ef5fe1d70155517c2e691a2a8872149a3c8f70935ab64e7fdf1b63d",
}


def _doc_text() -> str:
    return "".join(PROTOCOL_MD.read_text().split())  # hex in the document may wrap across lines


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_vector_is_printed_in_the_protocol_document(name: str) -> None:
    assert "".join(VECTORS[name].split()) in _doc_text()


def test_device_list_vectors() -> None:
    first, second = _chain()
    assert IDENTITY.public_key.hex() == VECTORS["identity_public_key"]
    assert device_list_entry_hash(username="alice", entry=first).hex() == VECTORS["entry1_hash"]
    assert first.signature.hex() == VECTORS["entry1_signature"]
    assert second.prev_hash.hex() == VECTORS["entry1_hash"]
    assert device_list_entry_hash(username="alice", entry=second).hex() == VECTORS["entry2_hash"]
    assert second.signature.hex() == VECTORS["entry2_signature"]
    # The full signed bytes are printed in the document too.
    assert device_list_entry_bytes(username="alice", entry=second).hex() in _doc_text()


def test_link_code_and_key_vectors() -> None:
    fingerprint = device_fingerprint_bytes(PHONE.x25519_public_key, PHONE.ed25519_public_key)
    assert fingerprint.hex() == VECTORS["fingerprint"]
    code = LinkCode(PHONE.device_id, fingerprint, SECRET)
    assert link_code_encode(code) == VECTORS["link_code"]
    assert link_code_decode(VECTORS["link_code"].lower().replace("-", " ")) == code
    keys = link_keys(secret=SECRET, device_id=PHONE.device_id)
    assert keys.verifier.hex() == VECTORS["verifier"]
    assert keys.verifier_hash.hex() == VECTORS["verifier_hash"]
    assert keys.mac_key.hex() == VECTORS["mac_key"]


def test_approval_vectors_open_and_verify() -> None:
    _, second = _chain()
    wrapped = bytes.fromhex(VECTORS["wrapped_identity_key"])
    # HPKE draws its ephemeral key itself: the vector is checked by opening it.
    opened = identity_key_unwrap(wrapped=wrapped, username="alice", device=PHONE)
    assert opened.public_key == IDENTITY.public_key
    message = link_approval_message(
        username="alice",
        device_id=PHONE.device_id,
        approver_device_id=LAPTOP.device_id,
        identity_public_key=IDENTITY.public_key,
        device_list_hash=device_list_entry_hash(username="alice", entry=second),
        wrapped_identity_key=wrapped,
    )
    mac_key = link_keys(secret=SECRET, device_id=PHONE.device_id).mac_key
    assert link_approval_mac(mac_key, message).hex() == VECTORS["approval_mac"]
    assert link_approval_verify(mac_key, message, bytes.fromhex(VECTORS["approval_mac"]))


def test_a_verified_chain_yields_its_head() -> None:
    first, second = _chain()
    head = device_list_verify(username="alice", identity_public_key=IDENTITY.public_key, entries=[first, second])
    assert head.version == 2 and set(head.devices) == {LAPTOP.device_id, PHONE.device_id}
    assert head.hash == device_list_entry_hash(username="alice", entry=second)


def _refused(
    entries: list[DeviceListEntry], *, pinned: tuple[int, bytes] | None = None, username: str = "alice"
) -> str:
    with pytest.raises(DeviceListError) as excinfo:
        device_list_verify(username=username, identity_public_key=IDENTITY.public_key, entries=entries, pinned=pinned)
    return str(excinfo.value)


def test_a_device_added_by_the_server_breaks_the_signature() -> None:
    first, second = _chain()
    evil = ListedDevice(uuid.UUID(int=3), bytes(32), bytes(32), "evil")
    forged = dataclasses.replace(
        second, devices=tuple(sorted((*second.devices, evil), key=lambda d: d.device_id.bytes))
    )
    assert "not signed" in _refused([first, forged])


def test_a_device_hidden_by_the_server_breaks_the_signature() -> None:
    first, second = _chain()
    assert "not signed" in _refused([first, dataclasses.replace(second, devices=second.devices[:1])])


def test_an_entry_signed_by_another_identity_is_refused() -> None:
    first, _ = _chain()
    other = IdentityKeyPair(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    mallory = device_list_next(
        identity=other,
        username="alice",
        head=first,
        change="linked",
        subject=_listed(PHONE, "phone"),
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=T2,
    )
    assert "not signed" in _refused([first, mallory])


def test_the_list_of_another_account_is_refused() -> None:
    first, second = _chain()
    assert "not signed" in _refused([first, second], username="bob")


def test_missing_reordered_and_unchained_entries_are_refused() -> None:
    first, second = _chain()
    assert "version 1" in _refused([second])
    assert _refused([])
    assert "does not follow" in _refused([first, dataclasses.replace(second, prev_hash=bytes(32))])


def test_a_rollback_or_fork_after_a_newer_version_was_seen_is_refused() -> None:
    first, second = _chain()
    seen = (2, device_list_entry_hash(username="alice", entry=second))
    assert "rolled back" in _refused([first], pinned=seen)
    fork = device_list_next(
        identity=IDENTITY,
        username="alice",
        head=first,
        change="linked",
        subject=_listed(PHONE, "phone"),
        actor_device_id=LAPTOP.device_id,
        timestamp_ms=T2 + 1,
    )
    assert "forked" in _refused([first, fork], pinned=seen)


def test_a_signed_entry_that_does_not_match_its_change_is_refused() -> None:
    first, second = _chain()
    # Validly signed, but a "link" that drops a device: the chain rules catch it.
    unsigned = dataclasses.replace(second, devices=(_listed(PHONE, "phone"),), signature=b"")
    bad = dataclasses.replace(
        unsigned, signature=IDENTITY.sign(device_list_entry_bytes(username="alice", entry=unsigned))
    )
    assert "exactly its subject" in _refused([first, bad])


def test_a_mistyped_link_code_is_refused() -> None:
    text = VECTORS["link_code"]
    for index in range(0, len(text), 5):
        typo = text[:index] + ("B" if text[index] != "B" else "C") + text[index + 1 :]
        with pytest.raises(LinkCodeError):
            link_code_decode(typo)
    with pytest.raises(LinkCodeError):
        link_code_decode(text[:-5])
    with pytest.raises(LinkCodeError):
        link_code_decode("not a code at all!")


def test_an_approval_made_without_the_secret_does_not_verify() -> None:
    _, second = _chain()
    wrapped = bytes.fromhex(VECTORS["wrapped_identity_key"])
    message = link_approval_message(
        username="alice",
        device_id=PHONE.device_id,
        approver_device_id=LAPTOP.device_id,
        identity_public_key=IDENTITY.public_key,
        device_list_hash=device_list_entry_hash(username="alice", entry=second),
        wrapped_identity_key=wrapped,
    )
    right = link_keys(secret=SECRET, device_id=PHONE.device_id)
    wrong = link_keys(secret=bytes(16), device_id=PHONE.device_id)
    other_device = link_keys(secret=SECRET, device_id=LAPTOP.device_id)
    mac = link_approval_mac(right.mac_key, message)
    assert not link_approval_verify(wrong.mac_key, message, mac)
    assert not link_approval_verify(other_device.mac_key, message, mac)
    # The verifier the server sees reveals nothing it could MAC with.
    assert not link_approval_verify(right.verifier, message, mac)
    for flipped in range(0, len(message), 7):
        altered = bytearray(message)
        altered[flipped] ^= 1
        assert not link_approval_verify(right.mac_key, bytes(altered), mac)


def test_a_wrapped_identity_key_opens_only_for_its_device_and_account() -> None:
    wrapped = identity_key_wrap(
        identity=IDENTITY,
        username="alice",
        device_id=PHONE.device_id,
        recipient_x25519_public_key=PHONE.x25519_public_key,
    )
    assert identity_key_unwrap(wrapped=wrapped, username="alice", device=PHONE).public_key == IDENTITY.public_key
    imposter = DeviceKeyPair(PHONE.device_id, LAPTOP.x25519_private_key, LAPTOP.ed25519_private_key)
    for username, device in (("bob", PHONE), ("alice", imposter), ("alice", LAPTOP)):
        with pytest.raises(DecryptError) as excinfo:
            identity_key_unwrap(wrapped=wrapped, username=username, device=device)
        assert excinfo.value.reason == DecryptFailure.TAMPERED
    with pytest.raises(DecryptError):
        identity_key_unwrap(wrapped=wrapped[:-1], username="alice", device=PHONE)
