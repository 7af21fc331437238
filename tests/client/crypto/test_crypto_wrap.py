"""ChatKey wrapping (protocol.md 2.2): round trip, and every way of moving or altering a wrap."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair
from client.crypto.wrap import (
    WrappedChatKey,
    chatkey_generate,
    chatkey_unwrap,
    chatkey_wrap,
    wrap_signature_message,
)

RngFactory = Callable[[str], Callable[[int], bytes]]


def bit_flips(data: bytes) -> Iterator[bytes]:
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        yield bytes(flipped)


@dataclasses.dataclass
class Setup:
    wrapper: DeviceKeyPair
    recipient: DeviceKeyPair
    other_recipient: DeviceKeyPair
    conversation_id: uuid.UUID
    epoch: int
    chat_key: bytes
    wrapped: WrappedChatKey

    def unwrap(self, **overrides: Any) -> bytes:
        arguments: dict[str, Any] = {
            "wrapped_key": self.wrapped.wrapped_key,
            "signature": self.wrapped.signature,
            "conversation_id": self.conversation_id,
            "epoch": self.epoch,
            "recipient": self.recipient,
            "wrapper_device_id": self.wrapper.device_id,
            "wrapper_ed25519_public_key": self.wrapper.ed25519_public_key,
        }
        arguments.update(overrides)
        return chatkey_unwrap(**arguments)

    def resign(
        self,
        wrapped_key: bytes,
        *,
        conversation_id: uuid.UUID | None = None,
        epoch: int | None = None,
        recipient_device_id: uuid.UUID | None = None,
    ) -> bytes:
        """What a vouched wrapper that turned malicious could sign: any bytes, any context."""
        return self.wrapper.sign(
            wrap_signature_message(
                conversation_id=self.conversation_id if conversation_id is None else conversation_id,
                epoch=self.epoch if epoch is None else epoch,
                recipient_device_id=self.recipient.device_id if recipient_device_id is None else recipient_device_id,
                wrapper_device_id=self.wrapper.device_id,
                wrapped_key=wrapped_key,
            )
        )


@pytest.fixture
def setup(make_rng: RngFactory) -> Setup:
    rng = make_rng("wrap")
    wrapper, recipient, other = (DeviceKeyPair.generate(rng) for _ in range(3))
    conversation_id, epoch, chat_key = uuid.UUID(bytes=rng(16), version=4), 5, chatkey_generate(rng)
    wrapped = chatkey_wrap(
        chat_key=chat_key,
        conversation_id=conversation_id,
        epoch=epoch,
        recipient_device_id=recipient.device_id,
        recipient_x25519_public_key=recipient.x25519_public_key,
        wrapper=wrapper,
    )
    return Setup(wrapper, recipient, other, conversation_id, epoch, chat_key, wrapped)


def reason_of(call: Callable[[], object]) -> DecryptFailure:
    with pytest.raises(DecryptError) as caught:
        call()
    return caught.value.reason


def test_wrap_round_trip_and_sizes(setup: Setup) -> None:
    assert len(setup.wrapped.wrapped_key) == 80
    assert len(setup.wrapped.signature) == 64
    assert setup.unwrap() == setup.chat_key


def test_chatkey_generate_returns_32_bytes_from_the_injected_rng() -> None:
    assert chatkey_generate(lambda n: b"\x07" * n) == b"\x07" * 32
    with pytest.raises(ValueError):
        chatkey_generate(lambda n: b"\x07" * (n - 1))


def test_two_wraps_of_the_same_key_differ(setup: Setup) -> None:
    """Fresh HPKE ephemeral key per wrap: the server cannot tell that two wraps hold one key."""
    again = chatkey_wrap(
        chat_key=setup.chat_key,
        conversation_id=setup.conversation_id,
        epoch=setup.epoch,
        recipient_device_id=setup.recipient.device_id,
        recipient_x25519_public_key=setup.recipient.x25519_public_key,
        wrapper=setup.wrapper,
    )
    assert again.wrapped_key[:32] != setup.wrapped.wrapped_key[:32]


def test_any_flipped_bit_in_wrapped_key_is_a_bad_signature(setup: Setup) -> None:
    for flipped in bit_flips(setup.wrapped.wrapped_key):
        assert reason_of(partial(setup.unwrap, wrapped_key=flipped)) is DecryptFailure.BAD_SIGNATURE


def test_any_flipped_bit_in_wrap_signature_is_a_bad_signature(setup: Setup) -> None:
    for flipped in bit_flips(setup.wrapped.signature):
        assert reason_of(partial(setup.unwrap, signature=flipped)) is DecryptFailure.BAD_SIGNATURE


def test_any_flipped_bit_in_a_re_signed_wrapped_key_is_tampered(setup: Setup) -> None:
    """Even the signer cannot alter a wrap undetected: HPKE's AEAD catches it."""
    for flipped in bit_flips(setup.wrapped.wrapped_key):
        signed = partial(setup.unwrap, wrapped_key=flipped, signature=setup.resign(flipped))
        assert reason_of(signed) is DecryptFailure.TAMPERED


@pytest.mark.parametrize("length", [0, 32, 79, 81, 160])
def test_wrapped_key_of_wrong_length_is_tampered(setup: Setup, length: int) -> None:
    wrapped_key = (setup.wrapped.wrapped_key * 2)[:length]
    signature = setup.resign(wrapped_key)
    assert reason_of(lambda: setup.unwrap(wrapped_key=wrapped_key, signature=signature)) is DecryptFailure.TAMPERED


@pytest.mark.parametrize("signature", [b"", bytes(63), bytes(64), bytes(65)])
def test_malformed_wrap_signature_is_a_bad_signature(setup: Setup, signature: bytes) -> None:
    assert reason_of(lambda: setup.unwrap(signature=signature)) is DecryptFailure.BAD_SIGNATURE


def test_wrap_presented_for_another_conversation_fails(setup: Setup) -> None:
    other = uuid.uuid4()
    assert reason_of(lambda: setup.unwrap(conversation_id=other)) is DecryptFailure.BAD_SIGNATURE
    signature = setup.resign(setup.wrapped.wrapped_key, conversation_id=other)
    assert reason_of(lambda: setup.unwrap(conversation_id=other, signature=signature)) is DecryptFailure.TAMPERED


@pytest.mark.parametrize("epoch", [4, 6, 2**31 - 1])
def test_wrap_presented_for_another_epoch_fails(setup: Setup, epoch: int) -> None:
    assert reason_of(lambda: setup.unwrap(epoch=epoch)) is DecryptFailure.BAD_SIGNATURE
    signature = setup.resign(setup.wrapped.wrapped_key, epoch=epoch)
    assert reason_of(lambda: setup.unwrap(epoch=epoch, signature=signature)) is DecryptFailure.TAMPERED


@pytest.mark.parametrize("epoch", [-1, 2**32])
def test_wrap_with_an_unencodable_epoch_is_a_bad_signature(setup: Setup, epoch: int) -> None:
    assert reason_of(lambda: setup.unwrap(epoch=epoch)) is DecryptFailure.BAD_SIGNATURE


def test_wrap_presented_to_another_device_fails(setup: Setup) -> None:
    other = setup.other_recipient
    assert reason_of(lambda: setup.unwrap(recipient=other)) is DecryptFailure.BAD_SIGNATURE
    signature = setup.resign(setup.wrapped.wrapped_key, recipient_device_id=other.device_id)
    assert reason_of(lambda: setup.unwrap(recipient=other, signature=signature)) is DecryptFailure.TAMPERED


def test_wrap_info_binds_the_recipient_device_id_not_only_its_key(setup: Setup) -> None:
    """Same X25519 key under another device id: the info differs, so HPKE does not open."""
    renamed = DeviceKeyPair(uuid.uuid4(), setup.recipient.x25519_private_key, setup.recipient.ed25519_private_key)
    signature = setup.resign(setup.wrapped.wrapped_key, recipient_device_id=renamed.device_id)
    assert reason_of(lambda: setup.unwrap(recipient=renamed, signature=signature)) is DecryptFailure.TAMPERED


def test_wrap_attributed_to_another_wrapper_fails(setup: Setup) -> None:
    impostor = setup.other_recipient
    assert reason_of(lambda: setup.unwrap(wrapper_device_id=impostor.device_id)) is DecryptFailure.BAD_SIGNATURE
    assert (
        reason_of(lambda: setup.unwrap(wrapper_ed25519_public_key=impostor.ed25519_public_key))
        is DecryptFailure.BAD_SIGNATURE
    )
    assert reason_of(lambda: setup.unwrap(wrapper_ed25519_public_key=b"")) is DecryptFailure.BAD_SIGNATURE


@pytest.mark.parametrize("epoch", [0, -1, 2**31])
def test_chatkey_wrap_refuses_epochs_outside_1_to_max_epoch(setup: Setup, epoch: int) -> None:
    with pytest.raises(ValueError):
        chatkey_wrap(
            chat_key=setup.chat_key,
            conversation_id=setup.conversation_id,
            epoch=epoch,
            recipient_device_id=setup.recipient.device_id,
            recipient_x25519_public_key=setup.recipient.x25519_public_key,
            wrapper=setup.wrapper,
        )


@pytest.mark.parametrize(("chat_key", "public_key"), [(bytes(31), None), (bytes(33), None), (None, bytes(31))])
def test_chatkey_wrap_refuses_malformed_keys(setup: Setup, chat_key: bytes | None, public_key: bytes | None) -> None:
    with pytest.raises(ValueError):
        chatkey_wrap(
            chat_key=chat_key if chat_key is not None else setup.chat_key,
            conversation_id=setup.conversation_id,
            epoch=1,
            recipient_device_id=setup.recipient.device_id,
            recipient_x25519_public_key=public_key if public_key is not None else setup.recipient.x25519_public_key,
            wrapper=setup.wrapper,
        )
