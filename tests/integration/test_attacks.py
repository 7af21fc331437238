"""Attacks, each rejected by the receiving client with its typed reason: bits flipped in each field
of a stored envelope (every bit of every field is flipped at the pure layer, tests/client/crypto),
replays into another conversation, epoch or sender, a device the server slipped into an account
without the account identity key (with or without a forged device-list entry), a device the server
hides, and a device list it rolls back."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from client.crypto.device_list import DeviceListEntry as DeviceListEntryData
from client.crypto.device_list import ListedDevice, device_list_next
from client.crypto.encoding import b64e
from client.crypto.errors import DecryptError, DecryptFailure
from client.crypto.keys import DeviceKeyPair
from client.crypto.lists_seen import ListSeen, lists_seen_encode
from client.crypto.manifest import epoch_manifest_bytes, epoch_manifest_parse
from client.crypto.vouch import vouch_sign
from client.errors import DeviceListInvalidError, HiddenDevicesError, SdkError, UntrustedDevicesError
from client.protocol import Envelope, device_list_entry_body
from client.session import DeviceSecrets, ReceivedMessage, Session, UndecryptableMessage
from client.transport.http import HttpTransport

from .conftest import restart

pytestmark = pytest.mark.django_db(transaction=True)


def _bit_flips(data: bytes) -> Iterator[bytes]:
    """A flipped bit at each end of a field (its first byte's lowest bit, its last byte's): through
    the whole client (restarts, key fetches, device lists) each costs a decrypt, so every bit is
    flipped at the pure layer instead (tests/client/crypto). For the epoch (1) the two ends make an
    epoch that cannot exist (0) and one this device does not hold."""
    for index in (0, len(data) - 1):
        flipped = bytearray(data)
        flipped[index] ^= 1
        yield bytes(flipped)


@pytest.fixture
def scene(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> dict[str, object]:
    alice = register(names("alice"), "laptop")
    alice_phone = link(alice, "phone")
    bob = register(names("bob"), "phone")
    direct = alice.create_conversation([bob.username], kind="direct")
    group = alice.create_conversation([bob.username], kind="group")
    alice.send_text(direct.conversation_id, "attack at dawn")
    bob.send_text(group.conversation_id, "group hello")
    envelope = bob.envelopes(direct.conversation_id)[0]
    return {
        "alice": alice,
        "alice_phone": alice_phone,
        "bob": bob,
        "direct": direct,
        "group": group,
        "envelope": envelope,
    }


def _reason(session: Session, envelope: Envelope) -> DecryptFailure | None:
    try:
        session.decrypt(envelope)
    except DecryptError as exc:
        return exc.reason
    return None


def test_a_bit_flipped_in_any_field_is_rejected(scene: dict[str, object]) -> None:
    bob = restart(scene["bob"])  # type: ignore[arg-type]
    envelope: Envelope = scene["envelope"]  # type: ignore[assignment]
    assert isinstance(bob.decrypt(envelope), ReceivedMessage)  # the genuine envelope decrypts

    reasons: dict[str, set[DecryptFailure | None]] = {}
    for name in ("ciphertext", "nonce", "signature", "client_message_id", "device_lists"):
        value: bytes = getattr(envelope, name)
        reasons[name] = {
            _reason(
                restart(bob) if name == "client_message_id" else bob,
                dataclasses.replace(envelope, **cast(dict[str, Any], {name: flipped})),
            )
            for flipped in _bit_flips(value)
        }
    reasons["conversation_id"] = {
        _reason(bob, dataclasses.replace(envelope, conversation_id=uuid.UUID(bytes=flipped)))
        for flipped in _bit_flips(envelope.conversation_id.bytes)
    }
    reasons["sender_device_id"] = {
        _reason(bob, dataclasses.replace(envelope, sender_device_id=uuid.UUID(bytes=flipped)))
        for flipped in _bit_flips(envelope.sender_device_id.bytes)
    }
    reasons["epoch"] = {
        _reason(bob, dataclasses.replace(envelope, epoch=int.from_bytes(flipped, "big")))
        for flipped in _bit_flips(envelope.epoch.to_bytes(4, "big"))
    }
    reasons["version"] = {_reason(bob, dataclasses.replace(envelope, version=v)) for v in (0, 2, 3, 129)}

    for field, seen in reasons.items():
        assert None not in seen, f"a flipped bit in {field} was accepted"
    assert reasons["ciphertext"] == {DecryptFailure.BAD_SIGNATURE}
    assert reasons["nonce"] == {DecryptFailure.BAD_SIGNATURE}
    assert reasons["signature"] == {DecryptFailure.BAD_SIGNATURE}
    assert reasons["client_message_id"] == {DecryptFailure.BAD_SIGNATURE}
    assert reasons["device_lists"] == {DecryptFailure.BAD_SIGNATURE}  # the signed header binds their hash
    assert reasons["sender_device_id"] == {DecryptFailure.UNVOUCHED_DEVICE}
    assert reasons["version"] == {DecryptFailure.UNSUPPORTED_VERSION}
    assert reasons["epoch"] <= {DecryptFailure.BAD_SIGNATURE, DecryptFailure.UNKNOWN_EPOCH}
    assert reasons["conversation_id"] <= {DecryptFailure.BAD_SIGNATURE, DecryptFailure.TAMPERED}


def test_envelope_replayed_into_another_conversation_epoch_or_sender_is_rejected(
    scene: dict[str, object],
) -> None:
    alice: Session = scene["alice"]  # type: ignore[assignment]
    alice_phone: Session = scene["alice_phone"]  # type: ignore[assignment]
    bob = restart(scene["bob"])  # type: ignore[arg-type]
    envelope: Envelope = scene["envelope"]  # type: ignore[assignment]
    group = scene["group"]
    alice.rotate_epoch(scene["direct"].conversation_id)  # type: ignore[attr-defined]

    into_group = dataclasses.replace(envelope, conversation_id=group.conversation_id)  # type: ignore[attr-defined]
    into_epoch_2 = dataclasses.replace(envelope, epoch=2)
    under_phone = dataclasses.replace(envelope, sender_device_id=alice_phone.device_id)
    under_bob = dataclasses.replace(envelope, sender_username=bob.username, sender_device_id=bob.device_id)
    for forged in (into_group, into_epoch_2, under_phone, under_bob):
        assert _reason(bob, forged) == DecryptFailure.BAD_SIGNATURE

    # The same envelope presented again at a later position of the same conversation.
    assert isinstance(bob.decrypt(envelope), ReceivedMessage)
    assert _reason(bob, dataclasses.replace(envelope, seq=envelope.seq + 7)) == DecryptFailure.REPLAYED
    assert isinstance(bob.decrypt(envelope), ReceivedMessage)  # re-reading the original is no replay


def _slip_in_device(server_url: str, victim: Session) -> Session:
    """What a malicious server can do alone: write an 'active' device and a token for it."""
    from devices.models import Device, DeviceToken
    from devices.tokens import token_generate, token_hash

    keys = DeviceKeyPair.generate()
    device = Device.objects.create(
        id=keys.device_id,
        user_id=Device.objects.get(id=victim.device_id).user_id,
        name="totally-legit",
        x25519_public_key=keys.x25519_public_key,
        ed25519_public_key=keys.ed25519_public_key,
        vouch_signature=os.urandom(64),
        status=Device.Status.ACTIVE,
    )
    token = token_generate()
    DeviceToken.objects.create(device=device, token_hash=token_hash(token))
    secrets = DeviceSecrets(
        server_url=server_url,
        username=victim.username,
        device=keys,
        device_name="totally-legit",
        identity=None,
        token=token,
    )
    return Session(secrets, HttpTransport(server_url))


def test_device_slipped_in_by_the_server_gets_no_key_and_its_messages_are_rejected(
    scene: dict[str, object],
    server_url: str,
) -> None:
    from conversations.models import WrappedKey

    alice: Session = scene["alice"]  # type: ignore[assignment]
    bob: Session = scene["bob"]  # type: ignore[assignment]
    direct = scene["direct"]
    conversation_id = direct.conversation_id  # type: ignore[attr-defined]
    evil = _slip_in_device(server_url, alice)

    # Honest clients refuse to wrap a ChatKey for it, for a new conversation or a new epoch.
    for honest in (restart(alice), restart(bob)):
        with pytest.raises(UntrustedDevicesError) as excinfo:
            honest.create_conversation([bob.username if honest.username != bob.username else alice.username])
        assert excinfo.value.device_ids == [evil.device_id]
        with pytest.raises(UntrustedDevicesError):
            honest.rotate_epoch(conversation_id)
    assert not WrappedKey.objects.filter(recipient_device_id=evil.device_id).exists()

    # Even holding the real ChatKey (the worst case), its messages are refused by every receiver.
    evil._chat_keys[(conversation_id, 1)] = alice._chat_keys[(conversation_id, 1)]
    forged = evil.send_text(conversation_id, "please wire the money to account 1234")
    for receiver in (restart(bob), restart(alice), restart(scene["alice_phone"])):  # type: ignore[arg-type]
        results = {r.seq: r for r in receiver.history(conversation_id)}
        assert isinstance(results[forged.seq], UndecryptableMessage)
        assert results[forged.seq].reason == DecryptFailure.UNVOUCHED_DEVICE  # type: ignore[union-attr]
        assert isinstance(results[1], ReceivedMessage) and results[1].text == "attack at dawn"


def test_device_slipped_in_with_a_forged_device_list_entry_is_refused_by_every_client(
    scene: dict[str, object],
    server_url: str,
) -> None:
    """The server writes the device and also appends it to the account's signed device list, with a
    signature it made up (it has no identity key): the chain no longer verifies."""
    from conversations.models import WrappedKey
    from devices.device_list import device_list_entry_hash
    from devices.models import Device, DeviceListEntry
    from devices.selectors import device_list_entry_data, device_list_head

    alice: Session = scene["alice"]  # type: ignore[assignment]
    bob: Session = scene["bob"]  # type: ignore[assignment]
    conversation_id = scene["direct"].conversation_id  # type: ignore[attr-defined]
    evil = _slip_in_device(server_url, alice)
    user_id = Device.objects.get(id=alice.device_id).user_id
    head = device_list_head(user_id=user_id)
    assert head is not None
    devices = sorted(
        [
            *head.devices,
            {
                "device_id": str(evil.device_id),
                "name": "totally-legit",
                "x25519_public_key": b64e(evil.secrets.device.x25519_public_key),
                "ed25519_public_key": b64e(evil.secrets.device.ed25519_public_key),
            },
        ],
        key=lambda d: uuid.UUID(d["device_id"]).bytes,
    )
    DeviceListEntry.objects.create(
        user_id=user_id,
        version=head.version + 1,
        prev_hash=device_list_entry_hash(username=alice.username, entry=device_list_entry_data(head)),
        change="linked",
        subject_device_id=evil.device_id,
        actor_device_id=alice.device_id,
        timestamp_ms=0,
        devices=devices,
        signature=os.urandom(64),
    )

    for honest in (restart(alice), restart(bob)):
        with pytest.raises(DeviceListInvalidError) as excinfo:
            honest.rotate_epoch(conversation_id)
        assert "not signed" in excinfo.value.reason
    assert not WrappedKey.objects.filter(recipient_device_id=evil.device_id).exists()

    evil._chat_keys[(conversation_id, 1)] = alice._chat_keys[(conversation_id, 1)]
    # The evil device skips the honest client's checks (2.14) and seals directly, naming the
    # device lists Alice's laptop saw (the forged chain verifies for nobody, itself included).
    evil.secrets.device_lists = dict(alice.secrets.device_lists)
    request, _ = evil.seal_send(evil.conversation(conversation_id), {"type": "text", "body": "new bank details"})
    forged = Envelope.parse(evil.transport.execute(request)[1])
    for receiver in (restart(bob), restart(alice), restart(scene["alice_phone"])):  # type: ignore[arg-type]
        result = {r.seq: r for r in receiver.history(conversation_id)}[forged.seq]
        assert isinstance(result, UndecryptableMessage) and result.reason == DecryptFailure.UNVOUCHED_DEVICE


def test_a_device_hidden_by_the_server_is_detected_and_nothing_is_wrapped(scene: dict[str, object]) -> None:
    """The server stops showing Alice's phone (to keep it out of the next epoch) without a signed
    revocation: the phone is still on the signed list, so Bob's client refuses to rotate."""
    from devices.models import Device

    alice_phone: Session = scene["alice_phone"]  # type: ignore[assignment]
    bob = restart(scene["bob"])  # type: ignore[arg-type]
    conversation_id = scene["direct"].conversation_id  # type: ignore[attr-defined]
    Device.objects.filter(id=alice_phone.device_id).update(status=Device.Status.REVOKED)
    with pytest.raises(HiddenDevicesError) as excinfo:
        bob.rotate_epoch(conversation_id)
    assert excinfo.value.device_ids == [alice_phone.device_id]


def test_a_device_list_rolled_back_by_the_server_is_detected(scene: dict[str, object]) -> None:
    """Bob has seen version 2 of Alice's list (her phone linked); the server then serves version 1
    only (as if the phone had never joined): Bob's client refuses the list and trusts none of it."""
    from devices.models import Device, DeviceListEntry

    alice: Session = scene["alice"]  # type: ignore[assignment]
    bob: Session = scene["bob"]  # type: ignore[assignment]
    conversation_id = scene["group"].conversation_id  # type: ignore[attr-defined]
    assert bob.secrets.device_lists[alice.username][0] == 2
    user_id = Device.objects.get(id=alice.device_id).user_id
    DeviceListEntry.objects.filter(user_id=user_id, version=2).delete()
    Device.objects.filter(id=scene["alice_phone"].device_id).update(status=Device.Status.REVOKED)  # type: ignore[attr-defined]
    later = restart(bob)
    entry = later.directory(alice.username)
    assert entry.list_error is not None and "rolled back" in entry.list_error and not entry.devices
    with pytest.raises(DeviceListInvalidError):
        later.rotate_epoch(conversation_id)
    # Alice's "attack at dawn", accepted before, is now refused: no device of hers is trusted.
    direct = scene["direct"].conversation_id  # type: ignore[attr-defined]
    result = later.history(direct)[0]
    assert isinstance(result, UndecryptableMessage) and result.reason == DecryptFailure.UNVOUCHED_DEVICE
    # Alice's own devices saw version 2 too, and refuse the rolled-back list just the same.
    assert restart(alice).directory(alice.username).list_error is not None


def test_a_signed_revocation_is_no_hidden_device_and_the_log_records_it(scene: dict[str, object]) -> None:
    alice: Session = scene["alice"]  # type: ignore[assignment]
    alice_phone: Session = scene["alice_phone"]  # type: ignore[assignment]
    bob = restart(scene["bob"])  # type: ignore[arg-type]
    conversation_id = scene["direct"].conversation_id  # type: ignore[attr-defined]
    restart(alice).revoke_device(alice_phone.device_id, rotate=False)

    assert bob.rotate_epoch(conversation_id) == 2  # no hidden device: the list says it left
    from conversations.models import WrappedKey

    assert not WrappedKey.objects.filter(recipient_device_id=alice_phone.device_id, epoch__number=2).exists()
    log = restart(alice).device_log()
    assert [(e.version, e.change) for e in log] == [(1, "created"), (2, "linked"), (3, "revoked")]
    assert (log[2].subject_device_id, log[2].actor_device_id) == (alice_phone.device_id, alice.device_id)


def test_an_operators_revocation_is_hidden_until_a_device_of_the_account_signs_it(scene: dict[str, object]) -> None:
    from devices.models import Device
    from devices.services import device_revoke

    alice: Session = scene["alice"]  # type: ignore[assignment]
    alice_phone: Session = scene["alice_phone"]  # type: ignore[assignment]
    conversation_id = scene["direct"].conversation_id  # type: ignore[attr-defined]
    device_revoke(device=Device.objects.get(id=alice_phone.device_id), reason="operator")
    with pytest.raises(HiddenDevicesError):
        restart(scene["bob"]).rotate_epoch(conversation_id)  # type: ignore[arg-type]

    result = restart(alice).revoke_device(alice_phone.device_id)  # signs the revocation after the fact
    assert result.rotated == {conversation_id: 2, scene["group"].conversation_id: 2}  # type: ignore[attr-defined]
    assert restart(scene["bob"]).rotate_epoch(conversation_id) == 3  # type: ignore[arg-type]
    assert [e.change for e in restart(alice).device_log()] == ["created", "linked", "revoked"]


def test_a_key_the_server_slips_into_an_epoch_for_its_own_device_makes_honest_clients_refuse_to_send(
    scene: dict[str, object], server_url: str
) -> None:
    """The server inserts a device into Alice's account and a wrapped-key row for it into the
    current epoch (as if it had been a recipient): no honest client sends under that epoch, and
    none can start a new one that would include it, so nothing is sent and the device is named."""
    from conversations.models import ChatKeyEpoch, WrappedKey
    from messaging.models import Message

    alice: Session = scene["alice"]  # type: ignore[assignment]
    conversation_id = scene["group"].conversation_id  # type: ignore[attr-defined]
    evil = _slip_in_device(server_url, alice)
    WrappedKey.objects.create(
        epoch=ChatKeyEpoch.objects.get(conversation_id=conversation_id, number=1),
        recipient_device_id=evil.device_id,
        wrapping_device_id=alice.device_id,
        wrapped_key=os.urandom(80),
        signature=os.urandom(64),
    )
    stored = Message.objects.filter(conversation_id=conversation_id).count()

    for honest in (restart(alice), restart(scene["bob"])):  # type: ignore[arg-type]
        with pytest.raises(UntrustedDevicesError) as excinfo:
            honest.send_text(conversation_id, "wire the money")
        assert excinfo.value.device_ids == [evil.device_id]
    assert Message.objects.filter(conversation_id=conversation_id).count() == stored
    assert ChatKeyEpoch.objects.filter(conversation_id=conversation_id).count() == 1


def _manifest_with(alice: Session, conversation_id: uuid.UUID, epoch: int, extra: uuid.UUID) -> bytes:
    """Epoch `epoch`'s stored manifest with `extra` added to Alice's devices (canonical order)."""
    from conversations.models import ChatKeyEpoch

    row = ChatKeyEpoch.objects.get(conversation_id=conversation_id, number=epoch)
    manifest = epoch_manifest_parse(bytes(row.manifest))
    members = tuple(
        dataclasses.replace(m, device_ids=(*m.device_ids, extra)) if m.username == alice.username else m
        for m in manifest.members
    )
    return epoch_manifest_bytes(dataclasses.replace(manifest, members=members))


def test_a_manifest_the_server_rewrites_to_include_its_device_is_refused_for_reading_and_sending(
    scene: dict[str, object], server_url: str
) -> None:
    """The server slips its device into Alice's account and into epoch 1 of the group: a wrapped
    key row and the device added to the stored manifest (it cannot sign it again). Every honest
    client refuses the epoch's key (`epoch_manifest_invalid`) and sends nothing under it."""
    from conversations.models import ChatKeyEpoch, WrappedKey
    from messaging.models import Message

    alice: Session = scene["alice"]  # type: ignore[assignment]
    conversation_id = scene["group"].conversation_id  # type: ignore[attr-defined]
    evil = _slip_in_device(server_url, alice)
    epoch = ChatKeyEpoch.objects.get(conversation_id=conversation_id, number=1)
    WrappedKey.objects.create(
        epoch=epoch,
        recipient_device_id=evil.device_id,
        wrapping_device_id=alice.device_id,
        wrapped_key=os.urandom(80),
        signature=os.urandom(64),
    )
    epoch.manifest = _manifest_with(alice, conversation_id, 1, evil.device_id)
    epoch.save(update_fields=["manifest"])
    stored = Message.objects.filter(conversation_id=conversation_id).count()

    for honest in (restart(alice), restart(scene["bob"]), restart(scene["alice_phone"])):  # type: ignore[arg-type]
        results = honest.history(conversation_id)
        assert results and all(isinstance(r, UndecryptableMessage) for r in results)
        assert {r.reason for r in results} == {DecryptFailure.EPOCH_MANIFEST_INVALID}  # type: ignore[union-attr]
        with pytest.raises(SdkError):  # the epoch is refused, and a new one would include `evil`
            honest.send_text(conversation_id, "wire the money")
    assert Message.objects.filter(conversation_id=conversation_id).count() == stored


def test_a_manifest_naming_a_device_not_vouched_for_is_refused_and_the_device_named(
    scene: dict[str, object], server_url: str
) -> None:
    """A manifest signed by the epoch's creator that names a device its account never vouched
    for (a buggy or compromised creating client, helped by the server): `epoch_manifest_unvouched`
    for reading, naming the device, and no honest client sends under the epoch."""
    from conversations.models import ChatKeyEpoch
    from messaging.models import Message

    alice: Session = scene["alice"]  # type: ignore[assignment]
    conversation_id = scene["group"].conversation_id  # type: ignore[attr-defined]
    evil = _slip_in_device(server_url, alice)
    epoch = ChatKeyEpoch.objects.get(conversation_id=conversation_id, number=1)
    epoch.manifest = _manifest_with(alice, conversation_id, 1, evil.device_id)
    epoch.manifest_signature = alice.secrets.device.sign(bytes(epoch.manifest))
    epoch.save(update_fields=["manifest", "manifest_signature"])
    stored = Message.objects.filter(conversation_id=conversation_id).count()

    bob = restart(scene["bob"])  # type: ignore[arg-type]
    [result] = bob.history(conversation_id)
    assert isinstance(result, UndecryptableMessage)
    assert result.reason == DecryptFailure.EPOCH_MANIFEST_UNVOUCHED
    assert str(evil.device_id) in result.detail
    with pytest.raises(SdkError):
        bob.send_text(conversation_id, "wire the money")
    assert Message.objects.filter(conversation_id=conversation_id).count() == stored


def test_a_manifest_signature_flipped_by_the_server_is_refused_and_the_sender_rekeys(
    scene: dict[str, object],
) -> None:
    from conversations.models import ChatKeyEpoch

    conversation_id = scene["group"].conversation_id  # type: ignore[attr-defined]
    epoch = ChatKeyEpoch.objects.get(conversation_id=conversation_id, number=1)
    signature = bytes(epoch.manifest_signature)
    epoch.manifest_signature = bytes([signature[0] ^ 1]) + signature[1:]
    epoch.save(update_fields=["manifest_signature"])

    bob = restart(scene["bob"])  # type: ignore[arg-type]
    [result] = bob.history(conversation_id)
    assert isinstance(result, UndecryptableMessage)
    assert result.reason == DecryptFailure.EPOCH_MANIFEST_INVALID
    # Bob will not send under epoch 1: he starts epoch 2 (with his own manifest) and sends there.
    sent = bob.send_text(conversation_id, "still here")
    assert sent.epoch == 2
    alice = restart(scene["alice"])  # type: ignore[arg-type]
    assert [r.text for r in alice.history(conversation_id) if isinstance(r, ReceivedMessage)] == ["still here"]


def test_an_epoch_without_a_manifest_is_refused(scene: dict[str, object]) -> None:
    from conversations.models import ChatKeyEpoch

    conversation_id = scene["direct"].conversation_id  # type: ignore[attr-defined]
    ChatKeyEpoch.objects.filter(conversation_id=conversation_id).update(manifest=b"", manifest_signature=b"")

    bob = restart(scene["bob"])  # type: ignore[arg-type]
    [result] = bob.history(conversation_id)
    assert isinstance(result, UndecryptableMessage)
    assert result.reason == DecryptFailure.EPOCH_MANIFEST_INVALID


# -- the device lists a sender saw (protocol.md 2.19) ------------------------------------------------


def _store_entry(user_id: int, entry: DeviceListEntryData) -> None:
    """Write a signed device-list entry straight into the server's table, fields as uploaded."""
    from devices.models import DeviceListEntry

    body = device_list_entry_body(entry)
    DeviceListEntry.objects.create(
        user_id=user_id,
        version=entry.version,
        prev_hash=entry.prev_hash,
        change=entry.change,
        subject_device_id=entry.subject_device_id,
        actor_device_id=entry.actor_device_id,
        timestamp_ms=entry.timestamp_ms,
        devices=body["devices"],
        signature=entry.signature,
    )


def test_a_server_showing_two_members_different_device_lists_is_caught_on_the_next_message(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    """A stolen copy of Alice's identity key signs a second version 2 of her device list, linking
    the attacker's device; the server shows that fork to Bob alone (and slips the device into the
    current epoch, so Bob's client sees nothing to re-key), while Alice and Carol see the genuine
    version 2, Alice's new phone. Bob's chain verifies, so nothing looks wrong to Bob. His next
    message names the list he saw: Alice, her phone and Carol refuse it (`device_list_mismatch`),
    and Bob refuses Carol's next message the same way."""
    from conversations.models import ChatKeyEpoch, WrappedKey
    from devices.models import Device, DeviceListEntry

    alice = register(names("alice"), "laptop")
    bob = register(names("bob"), "phone")
    carol = register(names("carol"), "phone")
    cid = alice.create_conversation([bob.username, carol.username], kind="group").conversation_id
    bob.send_text(cid, "before")
    assert bob.secrets.device_lists[alice.username][0] == 1
    user_id = Device.objects.get(id=alice.device_id).user_id

    # The fork, shown to Bob: version 2 links the attacker's device, vouched by the stolen key.
    identity = alice.secrets.identity
    assert identity is not None
    evil = DeviceKeyPair.generate()
    head = alice.device_list(alice.username).entries[-1]
    fork = device_list_next(
        identity=identity,
        username=alice.username,
        head=head,
        change="linked",
        subject=ListedDevice(evil.device_id, evil.x25519_public_key, evil.ed25519_public_key, "phone"),
        actor_device_id=alice.device_id,
        timestamp_ms=int(time.time() * 1000),
    )
    evil_row = Device.objects.create(
        id=evil.device_id,
        user_id=user_id,
        name="phone",
        x25519_public_key=evil.x25519_public_key,
        ed25519_public_key=evil.ed25519_public_key,
        vouch_signature=vouch_sign(identity, evil, alice.username),
        status=Device.Status.ACTIVE,
    )
    _store_entry(user_id, fork)
    WrappedKey.objects.create(
        epoch=ChatKeyEpoch.objects.get(conversation_id=cid, number=1),
        recipient_device=evil_row,
        wrapping_device_id=alice.device_id,
        wrapped_key=os.urandom(80),
        signature=os.urandom(64),
    )
    bob = restart(bob)
    assert evil.device_id in bob.directory(alice.username).devices  # Bob trusts the fork
    forked = bob.send_payload(cid, {"type": "text", "body": "under the fork", "sent_at_ms": int(time.time() * 1000)})
    assert forked.epoch == 1  # nothing made Bob start a new epoch

    # Everyone else is shown the genuine version 2: the fork is gone, Alice links her phone.
    DeviceListEntry.objects.filter(user_id=user_id, version=2).delete()
    WrappedKey.objects.filter(recipient_device_id=evil.device_id).delete()
    Device.objects.filter(id=evil.device_id).update(status=Device.Status.REVOKED)
    alice_phone = link(alice, "phone")
    carol.forget_directory(alice.username)
    honest = carol.send_text(cid, "after")
    assert honest.epoch == 1  # so what Bob refuses below is the header's lists, not a new epoch

    for receiver in (restart(alice), restart(alice_phone), restart(carol)):
        results = {r.seq: r for r in receiver.history(cid)}
        assert isinstance(results[forked.seq - 1], ReceivedMessage)  # "before" is fine
        refused = results[forked.seq]
        assert isinstance(refused, UndecryptableMessage), receiver.username
        assert refused.reason == DecryptFailure.DEVICE_LIST_MISMATCH
        assert alice.username in refused.detail
        assert isinstance(results[honest.seq], ReceivedMessage)
    refused_by_bob = {r.seq: r for r in bob.history(cid)}[honest.seq]
    assert isinstance(refused_by_bob, UndecryptableMessage)
    assert refused_by_bob.reason == DecryptFailure.DEVICE_LIST_MISMATCH and "forked" in refused_by_bob.detail


def test_a_device_list_change_kept_from_one_member_is_reported_by_the_others(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    """The server keeps Alice's new phone (version 2 of her list) from Bob: he keeps seeing
    version 1, a genuine list, just an old one. His messages say so; Alice's devices accept them
    but warn (`device_list_stale`) once he wrote them longer after the change than propagation
    takes (the grace, 0 here to avoid waiting ten minutes)."""
    from devices.models import Device, DeviceListEntry

    alice = register(names("alice"), "laptop")
    bob = register(names("bob"), "phone")
    cid = alice.create_conversation([bob.username], kind="direct").conversation_id
    bob.send_text(cid, "hello")
    alice_phone = link(alice, "phone")
    user_id = Device.objects.get(id=alice.device_id).user_id

    # Bob is shown the list and the devices as they were before the phone was linked.
    genuine = DeviceListEntry.objects.get(user_id=user_id, version=2)
    genuine_fields = {f.name: getattr(genuine, f.name) for f in DeviceListEntry._meta.concrete_fields}
    genuine.delete()
    Device.objects.filter(id=alice_phone.device_id).update(status=Device.Status.PENDING)
    bob = restart(bob)
    kept_from_bob = bob.send_text(cid, "still only your laptop?")
    DeviceListEntry.objects.create(**genuine_fields)
    Device.objects.filter(id=alice_phone.device_id).update(status=Device.Status.ACTIVE)

    # Bob's client, shown no phone, left it out of a new epoch: only the laptop can read this.
    patient = restart(alice)  # the default grace: a change just now is no reason to warn
    assert {r.seq: r for r in patient.history(cid)}[kept_from_bob.seq].warnings == ()  # type: ignore[union-attr]
    strict = restart(alice)
    strict.list_stale_grace_ms = 0
    result = {r.seq: r for r in strict.history(cid)}[kept_from_bob.seq]
    assert isinstance(result, ReceivedMessage) and result.text == "still only your laptop?"
    assert len(result.warnings) == 1 and result.warnings[0].startswith("device_list_stale:")
    assert f"version 1 of the device list of {alice.username!r}" in result.warnings[0]


def test_device_lists_seen_that_are_malformed_or_leave_out_the_sender_are_refused(scene: dict[str, object]) -> None:
    """A sender's own client could write anything there: the receiver still holds it to 2.19."""
    alice: Session = scene["alice"]  # type: ignore[assignment]
    bob = restart(scene["bob"])  # type: ignore[arg-type]
    conversation = alice.conversation(scene["direct"].conversation_id)  # type: ignore[attr-defined]
    cases = {
        "malformed": b"\x00\x01garbage",
        "no sender": lists_seen_encode([ListSeen(bob.username, *bob.secrets.device_lists[bob.username])]),
    }
    reasons = {}
    for name, lists in cases.items():
        alice.lists_seen = lambda _conversation, lists=lists: lists  # type: ignore[method-assign,misc]
        request, _ = alice.seal_send(conversation, {"type": "text", "body": name, "sent_at_ms": 1})
        envelope = Envelope.parse(alice.transport.execute(request)[1])
        reasons[name] = _reason(bob, envelope)
    assert reasons == {"malformed": DecryptFailure.TAMPERED, "no sender": DecryptFailure.DEVICE_LIST_MISMATCH}
