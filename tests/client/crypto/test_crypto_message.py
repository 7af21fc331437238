"""Message encryption (protocol.md 2.3): byte layout, round trip, and alteration of every field."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair, ed25519_verify
from client.crypto.lists_seen import ListSeen, lists_seen_encode
from client.crypto.message import (
    SealedMessage,
    message_encrypt,
    message_header,
    message_key,
    message_open,
    message_signature_verify,
    pad,
)
from client.crypto.symmetric import aes256gcm_seal

RngFactory = Callable[[str], Callable[[int], bytes]]

PAYLOAD: dict[str, Any] = {"type": "text", "body": "héllo ✓ 👋", "sent_at_ms": 1764091200000}
# The device lists the sender saw: the inputs of the 2.19 vector (alice's v2 hash of 2.13, bob v1).
ALICE_V2_HASH = bytes.fromhex("fadaa6936dfeb0b8299ef3fdd93b4bcc79490f783f5ec37e56e866c5c297dd5a")
LISTS = lists_seen_encode([ListSeen("alice", 2, ALICE_V2_HASH), ListSeen("bob", 1, b"\xbb" * 32)])
HEADER_VECTOR_HASH = "6ab341a63260fd868b14fef4c768ddaa29c4a01852581329ea9cc53eae90bbe2"
HEADER_FIELDS = {  # name: (start, end) in the 85-byte header
    "version": (0, 1),
    "conversation_id": (1, 17),
    "epoch": (17, 21),
    "sender_device_id": (21, 37),
    "client_message_id": (37, 53),
    "device_lists_hash": (53, 85),
}


def bit_flips(data: bytes, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    for i in range(start * 8, (len(data) if end is None else end) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        yield bytes(flipped)


@dataclasses.dataclass
class Sent:
    sender: DeviceKeyPair
    other_sender: DeviceKeyPair
    chat_key: bytes
    conversation_id: uuid.UUID
    epoch: int
    sealed: SealedMessage

    @property
    def header(self) -> bytes:
        return message_header(
            conversation_id=self.conversation_id,
            epoch=self.epoch,
            sender_device_id=self.sender.device_id,
            client_message_id=self.sealed.client_message_id,
            device_lists=self.sealed.device_lists,
        )

    def verify(self, **overrides: Any) -> bool:
        arguments: dict[str, Any] = {
            "header": self.header,
            "nonce": self.sealed.nonce,
            "ciphertext": self.sealed.ciphertext,
            "signature": self.sealed.signature,
            "sender_ed25519_public_key": self.sender.ed25519_public_key,
        }
        arguments.update(overrides)
        return message_signature_verify(**arguments)

    def open(self, **overrides: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "chat_key": self.chat_key,
            "header": self.header,
            "nonce": self.sealed.nonce,
            "ciphertext": self.sealed.ciphertext,
        }
        arguments.update(overrides)
        return message_open(**arguments)


@pytest.fixture
def sent(make_rng: RngFactory) -> Sent:
    rng = make_rng("message")
    sender, other = DeviceKeyPair.generate(rng), DeviceKeyPair.generate(rng)
    chat_key, conversation_id = rng(32), uuid.UUID(bytes=rng(16), version=4)
    sealed = message_encrypt(
        chat_key=chat_key,
        conversation_id=conversation_id,
        epoch=3,
        sender=sender,
        payload=PAYLOAD,
        device_lists=LISTS,
        rng=rng,
    )
    return Sent(sender, other, chat_key, conversation_id, 3, sealed)


def tampered(call: Callable[[], object]) -> bool:
    with pytest.raises(DecryptError) as caught:
        call()
    return caught.value.reason is DecryptFailure.TAMPERED


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


# -- layout -----------------------------------------------------------------------------------------


def test_header_is_the_85_byte_layout_of_the_spec() -> None:
    conversation, sender = uuid.uuid4(), uuid.uuid4()
    header = message_header(
        conversation_id=conversation,
        epoch=0x01020304,
        sender_device_id=sender,
        client_message_id=b"M" * 16,
        device_lists=LISTS,
    )
    lists_hash = hashlib.sha256(b"e2ee-msg/v1/device-lists-seen" + LISTS).digest()
    assert header == b"\x01" + conversation.bytes + b"\x01\x02\x03\x04" + sender.bytes + b"M" * 16 + lists_hash
    assert len(header) == 85


def test_header_vector_of_the_spec() -> None:
    """protocol.md 2.3: the header of the 2.19 vector's lists, field values spelled out."""
    header = message_header(
        conversation_id=uuid.UUID("33333333-3333-4333-8333-333333333333"),
        epoch=2,
        sender_device_id=uuid.UUID("11111111-1111-4111-8111-111111111111"),
        client_message_id=bytes(range(16)),
        device_lists=LISTS,
    )
    assert header.hex() == (
        "0133333333333343338333333333333333000000021111111111114111811111111111111100010203040506070809"
        "0a0b0c0d0e0f" + HEADER_VECTOR_HASH
    )


@pytest.mark.parametrize(
    ("epoch", "client_message_id"), [(-1, bytes(16)), (2**32, bytes(16)), (1, bytes(15)), (1, bytes(17))]
)
def test_header_refuses_unencodable_fields(epoch: int, client_message_id: bytes) -> None:
    with pytest.raises(ValueError):
        message_header(
            conversation_id=uuid.uuid4(),
            epoch=epoch,
            sender_device_id=uuid.uuid4(),
            client_message_id=client_message_id,
            device_lists=LISTS,
        )


def test_sealed_message_matches_an_independent_reading_of_the_spec(sent: Sent) -> None:
    """Key derivation, AAD, padding, JSON canonical form and signed bytes, rebuilt from the text."""
    sealed, header = sent.sealed, sent.header
    key = _hkdf_sha256(sent.chat_key, sealed.client_message_id, b"e2ee-msg/v1/message-key" + header, 32)
    padded = AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, header)
    payload = json.dumps(PAYLOAD, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert padded.startswith(payload + b"\x80")
    assert set(padded[len(payload) + 1 :]) <= {0} and len(padded) % 64 == 0 and len(padded) - len(payload) <= 64
    signed = b"e2ee-msg/v1/message-sig" + header + sealed.nonce + sealed.ciphertext
    assert ed25519_verify(sent.sender.ed25519_public_key, sealed.signature, signed)
    assert (sealed.version, sealed.epoch, len(sealed.nonce), len(sealed.signature)) == (1, 3, 12, 64)


def test_round_trip(sent: Sent) -> None:
    assert sent.verify()
    assert sent.open() == PAYLOAD


def test_randomness_is_drawn_from_the_injected_rng_in_order() -> None:
    sender, stream = DeviceKeyPair.generate(), iter([b"I" * 16, b"N" * 12])
    sealed = message_encrypt(
        chat_key=bytes(32),
        conversation_id=uuid.uuid4(),
        epoch=1,
        sender=sender,
        payload={},
        device_lists=LISTS,
        rng=lambda n: next(stream),
    )
    assert (sealed.client_message_id, sealed.nonce) == (b"I" * 16, b"N" * 12)


def test_a_given_client_message_id_is_kept() -> None:
    """A retried send must reuse its id (it is the idempotency key)."""
    sealed = message_encrypt(
        chat_key=bytes(32),
        conversation_id=uuid.uuid4(),
        epoch=1,
        sender=DeviceKeyPair.generate(),
        payload={},
        device_lists=LISTS,
        client_message_id=b"R" * 16,
    )
    assert sealed.client_message_id == b"R" * 16


@pytest.mark.parametrize("body_length", [0, 1, 30, 31, 32, 100, 1000])
def test_ciphertext_length_reveals_only_a_64_byte_bucket(body_length: int) -> None:
    sealed = message_encrypt(
        chat_key=bytes(32),
        conversation_id=uuid.uuid4(),
        epoch=1,
        sender=DeviceKeyPair.generate(),
        payload={"body": "x" * body_length},
        device_lists=LISTS,
    )
    assert (len(sealed.ciphertext) - 16) % 64 == 0


@pytest.mark.parametrize(
    "payload", [{"n": float("nan")}, {"n": float("inf")}, {"s": "\ud800"}, {1: "non-string key", "a": 1}]
)
def test_message_encrypt_refuses_payloads_that_are_not_portable_json(payload: dict[Any, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        message_encrypt(
            chat_key=bytes(32),
            conversation_id=uuid.uuid4(),
            epoch=1,
            sender=DeviceKeyPair.generate(),
            payload=payload,
            device_lists=LISTS,
        )


@pytest.mark.parametrize("epoch", [0, -1, 2**31])
def test_message_encrypt_refuses_epochs_outside_1_to_u32_max(epoch: int) -> None:
    with pytest.raises(ValueError):
        message_encrypt(
            chat_key=bytes(32),
            conversation_id=uuid.uuid4(),
            epoch=epoch,
            sender=DeviceKeyPair.generate(),
            payload={},
            device_lists=LISTS,
        )


# -- attacks: one flipped bit anywhere ------------------------------------------------------------


def test_any_flipped_bit_in_ciphertext_fails_signature_and_aead(sent: Sent) -> None:
    for flipped in bit_flips(sent.sealed.ciphertext):
        assert not sent.verify(ciphertext=flipped)
        assert tampered(partial(sent.open, ciphertext=flipped))


def test_any_flipped_bit_in_nonce_fails_signature_and_aead(sent: Sent) -> None:
    for flipped in bit_flips(sent.sealed.nonce):
        assert not sent.verify(nonce=flipped)
        assert tampered(partial(sent.open, nonce=flipped))


def test_any_flipped_bit_in_signature_fails(sent: Sent) -> None:
    for flipped in bit_flips(sent.sealed.signature):
        assert not sent.verify(signature=flipped)


@pytest.mark.parametrize("field", list(HEADER_FIELDS))
def test_any_flipped_bit_in_a_header_field_fails_signature_and_aead(sent: Sent, field: str) -> None:
    start, end = HEADER_FIELDS[field]
    count = 0
    for flipped in bit_flips(sent.header, start, end):
        assert not sent.verify(header=flipped)
        assert tampered(partial(sent.open, header=flipped))
        count += 1
    assert count == (end - start) * 8


def test_any_flipped_bit_in_the_device_lists_fails_signature_and_aead(sent: Sent) -> None:
    # The header carries their hash: the receiver rebuilds it from the lists it was given.
    count = 0
    for flipped in bit_flips(sent.sealed.device_lists):
        header = dataclasses.replace(sent, sealed=dataclasses.replace(sent.sealed, device_lists=flipped)).header
        assert not sent.verify(header=header)
        assert tampered(partial(sent.open, header=header))
        count += 1
    assert count == len(LISTS) * 8


# -- attacks: relabelling -------------------------------------------------------------------------


def _relabelled(sent: Sent, **fields: Any) -> bytes:
    values: dict[str, Any] = {
        "conversation_id": sent.conversation_id,
        "epoch": sent.epoch,
        "sender_device_id": sent.sender.device_id,
        "client_message_id": sent.sealed.client_message_id,
        "device_lists": sent.sealed.device_lists,
    }
    values.update(fields)
    return message_header(**values)


def test_message_relabelled_into_another_conversation_fails(sent: Sent) -> None:
    header = _relabelled(sent, conversation_id=uuid.uuid4())
    assert not sent.verify(header=header)
    assert tampered(lambda: sent.open(header=header))


@pytest.mark.parametrize("epoch", [2, 4])
def test_message_relabelled_into_another_epoch_fails(sent: Sent, epoch: int) -> None:
    header = _relabelled(sent, epoch=epoch)
    assert not sent.verify(header=header)
    assert tampered(lambda: sent.open(header=header))


def test_message_relabelled_under_another_sender_fails(sent: Sent) -> None:
    other = sent.other_sender
    header = _relabelled(sent, sender_device_id=other.device_id)
    assert not sent.verify(header=header, sender_ed25519_public_key=other.ed25519_public_key)
    assert not sent.verify(header=header)
    assert tampered(lambda: sent.open(header=header))


def test_message_under_another_epochs_key_is_tampered(sent: Sent) -> None:
    assert tampered(lambda: sent.open(chat_key=bytes(32)))


def test_bytes_shifted_between_nonce_and_ciphertext_are_rejected(sent: Sent) -> None:
    nonce, ciphertext = sent.sealed.nonce, sent.sealed.ciphertext
    assert not sent.verify(nonce=nonce + ciphertext[:1], ciphertext=ciphertext[1:])
    assert not sent.verify(nonce=nonce[:-1], ciphertext=nonce[-1:] + ciphertext)
    assert tampered(lambda: sent.open(nonce=nonce[:-1], ciphertext=nonce[-1:] + ciphertext))


@pytest.mark.parametrize("ciphertext", [b"", bytes(15), bytes(16)])
def test_truncated_ciphertext_is_tampered(sent: Sent, ciphertext: bytes) -> None:
    assert tampered(lambda: sent.open(ciphertext=ciphertext))


def test_signature_verify_never_raises_on_malformed_input(sent: Sent) -> None:
    assert not sent.verify(sender_ed25519_public_key=b"")
    assert not sent.verify(signature=b"")
    assert not sent.verify(header=sent.header[:-1])


# -- authenticated but malformed plaintexts (a vouched sender gone rogue) --------------------------


@pytest.mark.parametrize(
    "padded",
    [
        pad(b"[1, 2]"),  # JSON, but not an object
        pad(b'{"a": 1, "a": 2}'),  # duplicate key: parsers disagree on which wins
        pad(b'{"n": NaN}'),
        pad(b'{"s": "\xff"}'),  # not UTF-8
        pad(b"\xef\xbb\xbf{}"),  # BOM
        pad(b"{"),
        b"{}" + b"\x00" * 62,  # no 0x80 marker
        b"{}\x80" + b"\x00" * 61 + b"\x00" * 64,  # padding longer than one block
        b"{}\x80",  # not a multiple of 64
    ],
)
def test_authentic_but_malformed_plaintext_is_tampered(sent: Sent, padded: bytes) -> None:
    header = sent.header
    ciphertext = aes256gcm_seal(message_key(sent.chat_key, header), sent.sealed.nonce, padded, header)
    assert tampered(lambda: sent.open(ciphertext=ciphertext))


def test_message_open_refuses_a_chat_key_of_the_wrong_size_as_a_local_bug(sent: Sent) -> None:
    with pytest.raises(ValueError):
        sent.open(chat_key=bytes(31))
