"""The SDK's sans-I/O core (`client.core`): it seals and opens envelopes from what it holds and
says what it is missing. No server, no database, no sockets: a `World` holds what a server would
answer, and `drive` plays the shell, answering each `Missing` and calling the core again.
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pytest

import client.core
from client import protocol as proto
from client.core import (
    ConversationNeeded,
    Core,
    DeviceListNeeded,
    DirectoryNeeded,
    Fetches,
    KeysNeeded,
    Missing,
    Need,
    Refused,
    Sealed,
)
from client.core.envelope import envelope_seal
from client.core.model import DeviceSecrets, ReceivedMessage
from client.crypto.device_list import (
    DeviceListEntry,
    DeviceListError,
    ListedDevice,
    device_list_entry_hash,
    device_list_next,
)
from client.crypto.errors import DecryptFailure
from client.crypto.keys import DeviceKeyPair, IdentityKeyPair
from client.crypto.lists_seen import ListSeen, lists_seen_encode
from client.crypto.manifest import epoch_manifest_build
from client.crypto.vouch import vouch_sign
from client.crypto.wrap import chatkey_generate, chatkey_wrap
from client.errors import SdkError, ServerUnreachableError

T = TypeVar("T")
CID = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")


@dataclass
class Account:
    username: str
    identity: IdentityKeyPair
    device: DeviceKeyPair
    entries: list[DeviceListEntry]

    @property
    def list_seen(self) -> tuple[int, bytes]:
        return len(self.entries), device_list_entry_hash(username=self.username, entry=self.entries[-1])

    def secrets(self) -> DeviceSecrets:
        return DeviceSecrets(
            server_url="",
            username=self.username,
            device=self.device,
            device_name="phone",
            identity=self.identity,
            token=None,
            pins={self.username: self.identity.public_key},
            device_lists={self.username: self.list_seen},
        )


def account(username: str) -> Account:
    identity, device = IdentityKeyPair.generate(), DeviceKeyPair.generate()
    genesis = device_list_next(
        identity=identity,
        username=username,
        head=None,
        change="created",
        subject=ListedDevice(device.device_id, device.x25519_public_key, device.ed25519_public_key, "phone"),
        actor_device_id=device.device_id,
        timestamp_ms=int(time.time() * 1000),
    )
    return Account(username, identity, device, [genesis])


@dataclass
class World:
    """What the server would answer, in memory; `fail` makes a fetch fail like the transport."""

    accounts: dict[str, Account]
    conversation: proto.Conversation
    keys: dict[uuid.UUID, list[proto.WrappedKeyRecord]]  # recipient device -> its wrapped keys
    fail: dict[Need, Exception] = field(default_factory=dict)

    def answer(self, core: Core, need: Need, fetches: Fetches) -> None:
        """Hand the core what it asked for, as `Session.fetch` does over HTTP."""
        try:
            self._answer(core, need)
        except (proto.ApiError, SdkError, DeviceListError) as exc:
            fetches.record(need, exc)
        else:
            fetches.record(need)

    def _answer(self, core: Core, need: Need) -> None:
        if need in self.fail:
            raise self.fail[need]
        if isinstance(need, ConversationNeeded):
            core.learn_conversation(self.conversation)
        elif isinstance(need, DirectoryNeeded):
            owner = self.accounts[need.username]
            device = owner.device
            shown = proto.PublicDevice(
                device.device_id,
                device.x25519_public_key,
                device.ed25519_public_key,
                vouch_sign(owner.identity, device, owner.username),
            )
            entry = proto.DirectoryEntry(owner.username, owner.identity.public_key, [shown])
            core.trust.learn_directory(entry, list(owner.entries))
        elif isinstance(need, DeviceListNeeded):
            core.trust.learn_device_list(need.username, list(self.accounts[need.username].entries))
        else:
            core.keys.learn(need.conversation_id, self.keys.get(core.secrets.device.device_id, []))


def world_of(alice: Account, bob: Account) -> World:
    """A conversation of alice and bob at epoch 1, created by alice's device with its manifest."""
    chat_key = chatkey_generate()
    manifest, signature = epoch_manifest_build(
        conversation_id=CID,
        epoch=1,
        creator=alice.device,
        lists={a.username: a.list_seen for a in (alice, bob)},
        devices={a.username: [a.device.device_id] for a in (alice, bob)},
    )
    keys: dict[uuid.UUID, list[proto.WrappedKeyRecord]] = {}
    for member in (alice, bob):
        wrapped = chatkey_wrap(
            chat_key=chat_key,
            conversation_id=CID,
            epoch=1,
            recipient_device_id=member.device.device_id,
            recipient_x25519_public_key=member.device.x25519_public_key,
            wrapper=alice.device,
        )
        keys[member.device.device_id] = [
            proto.WrappedKeyRecord(
                1,
                wrapped.wrapped_key,
                wrapped.signature,
                alice.device.device_id,
                "alice",
                alice.device.device_id,
                "alice",
                manifest,
                signature,
            )
        ]
    conversation = proto.Conversation(CID, "direct", ["alice", "bob"], 1, 0, "t")
    return World({"alice": alice, "bob": bob}, conversation, keys)


def drive(core: Core, world: World, step: Callable[[Fetches], T | Missing]) -> tuple[T, list[Need]]:
    """Play the shell: answer every Missing and call again; the result and the needs, in order."""
    fetches, needs = Fetches(), []
    while isinstance(outcome := step(fetches), Missing):
        needs.append(outcome.need)
        world.answer(core, outcome.need, fetches)
    return outcome, needs


def delivered(sealed: Sealed, sender: Account, seq: int = 1) -> proto.Envelope:
    """The envelope as the server stores and pushes it."""
    return proto.Envelope.parse(
        {**sealed.body, "seq": seq, "conversation_id": str(CID), "sender_username": sender.username, "created_at": "t"}
    )


@pytest.fixture
def alice() -> Account:
    return account("alice")


@pytest.fixture
def bob() -> Account:
    return account("bob")


@pytest.fixture
def world(alice: Account, bob: Account) -> World:
    return world_of(alice, bob)


def seal_from(sender: Account, world: World, text: str = "hello") -> Sealed:
    core = Core(sender.secrets())
    payload = {"type": "text", "body": text, "sent_at_ms": int(time.time() * 1000)}
    sealed, _ = drive(core, world, lambda f: core.seal(world.conversation, payload, f))
    assert isinstance(sealed, Sealed)
    return sealed


def seal_as(device: DeviceKeyPair, alice: Account, world: World, lists: list[ListSeen], *, epoch: int = 1) -> Sealed:
    """A message sealed under the epoch-1 key (as alice's device holds it) by `device`, naming
    `lists` as the device lists seen: what a forger or a misled sender would send."""
    core = Core(alice.secrets())
    drive(core, world, lambda f: core.seal(world.conversation, {}, f))
    payload = {"type": "text", "body": "hi", "sent_at_ms": int(time.time() * 1000)}
    return envelope_seal(
        chat_key=core.keys.chat_keys[(CID, 1)],
        conversation_id=CID,
        epoch=epoch,
        sender=device,
        payload=payload,
        lists_seen=lists_seen_encode(lists),
    )


# -- opening -------------------------------------------------------------------------------------


def test_open_names_each_missing_thing_then_opens_the_message(alice: Account, bob: Account, world: World) -> None:
    envelope = delivered(seal_from(alice, world), alice)
    core = Core(bob.secrets())

    opened, needs = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(opened, ReceivedMessage)
    assert opened.text == "hello" and opened.sender_username == "alice" and opened.warnings == ()
    assert needs[:3] == [ConversationNeeded(CID), DirectoryNeeded("alice"), KeysNeeded(CID)]
    assert len(needs) == len(set(needs))  # nothing is asked for twice in one operation


def test_a_second_message_opens_from_what_the_core_holds(alice: Account, bob: Account, world: World) -> None:
    core = Core(bob.secrets())
    drive(core, world, lambda f: core.open(delivered(seal_from(alice, world, "one"), alice, 1), f))

    second = core.open(delivered(seal_from(alice, world, "two"), alice, 2), Fetches())

    assert isinstance(second, ReceivedMessage) and second.text == "two"


def test_a_forged_signature_is_refused_as_bad_signature(alice: Account, bob: Account, world: World) -> None:
    envelope = replace(delivered(seal_from(alice, world), alice), signature=bytes(64))
    core = Core(bob.secrets())

    refused, _ = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.BAD_SIGNATURE


def test_the_same_message_at_another_seq_is_refused_as_replayed(alice: Account, bob: Account, world: World) -> None:
    sealed = seal_from(alice, world)
    core = Core(bob.secrets())
    drive(core, world, lambda f: core.open(delivered(sealed, alice, 1), f))

    replayed = core.open(delivered(sealed, alice, 7), Fetches())

    assert isinstance(replayed, Refused) and replayed.error.reason == DecryptFailure.REPLAYED


def test_a_device_the_server_adds_is_refused_as_unvouched(alice: Account, bob: Account, world: World) -> None:
    # The server shows a device of alice's that her signed device list does not name.
    lists = [ListSeen("alice", *alice.list_seen), ListSeen("bob", *bob.list_seen)]
    envelope = delivered(seal_as(DeviceKeyPair.generate(), alice, world, lists), alice)
    core = Core(bob.secrets())

    refused, needs = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.UNVOUCHED_DEVICE
    assert DeviceListNeeded("alice") in needs  # a device revoked since would be on an older version


def test_an_epoch_the_conversation_does_not_have_is_refused_after_reading_it_again(
    alice: Account, bob: Account, world: World
) -> None:
    lists = [ListSeen("alice", *alice.list_seen), ListSeen("bob", *bob.list_seen)]
    envelope = delivered(seal_as(alice.device, alice, world, lists, epoch=5), alice)
    core = Core(bob.secrets())
    core.learn_conversation(world.conversation)

    refused, needs = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.UNKNOWN_EPOCH
    assert ConversationNeeded(CID) in needs  # epoch 5 may have begun since: read it again first


def test_a_conversation_the_server_does_not_show_is_refused_as_tampered(
    alice: Account, bob: Account, world: World
) -> None:
    envelope = delivered(seal_from(alice, world), alice)
    world.fail[ConversationNeeded(CID)] = proto.ApiError(404, "conversation_not_found", "no")
    core = Core(bob.secrets())

    refused, _ = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.TAMPERED


def test_a_failed_fetch_that_is_no_verdict_is_raised_and_the_message_opens_later(
    alice: Account, bob: Account, world: World
) -> None:
    envelope = delivered(seal_from(alice, world), alice)
    world.fail[KeysNeeded(CID)] = ServerUnreachableError("offline")
    core = Core(bob.secrets())

    with pytest.raises(ServerUnreachableError):
        drive(core, world, lambda f: core.open(envelope, f))
    del world.fail[KeysNeeded(CID)]
    opened, _ = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(opened, ReceivedMessage)


def test_a_key_this_device_was_never_given_is_missing_key(alice: Account, bob: Account, world: World) -> None:
    envelope = delivered(seal_from(alice, world), alice)
    world.keys[bob.device.device_id] = []
    core = Core(bob.secrets())

    refused, _ = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.MISSING_KEY
    assert not core.keys.refused(CID, 1)  # nothing held was bad: ask for the key


def test_a_wrapped_key_with_a_forged_signature_is_refused_and_remembered(
    alice: Account, bob: Account, world: World
) -> None:
    envelope = delivered(seal_from(alice, world), alice)
    (record,) = world.keys[bob.device.device_id]
    world.keys[bob.device.device_id] = [replace(record, signature=bytes(64))]
    core = Core(bob.secrets())

    refused, _ = drive(core, world, lambda f: core.open(envelope, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.BAD_SIGNATURE
    assert core.keys.refused(CID, 1)  # file the key request again, refusing the one held (4.8)


def test_a_device_list_the_sender_saw_that_this_device_cannot_verify_is_a_mismatch(
    alice: Account, bob: Account, world: World
) -> None:
    # Alice was shown another version 1 of bob's list than the one bob signed.
    lists = [ListSeen("alice", *alice.list_seen), ListSeen("bob", 1, b"\x0b" * 32)]
    sealed = seal_as(alice.device, alice, world, lists)
    core = Core(bob.secrets())

    refused, _ = drive(core, world, lambda f: core.open(delivered(sealed, alice), f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.DEVICE_LIST_MISMATCH


# -- sealing -------------------------------------------------------------------------------------


def test_seal_asks_for_the_epoch_key_and_the_members_lists_it_has_not_verified(
    alice: Account, bob: Account, world: World
) -> None:
    core = Core(alice.secrets())

    sealed, needs = drive(core, world, lambda f: core.seal(world.conversation, {"type": "text", "body": "x"}, f))

    assert isinstance(sealed, Sealed) and sealed.epoch == 1
    assert KeysNeeded(CID) in needs and DirectoryNeeded("bob") in needs  # bob's key pinned from his directory
    assert json.loads(json.dumps(sealed.body))["sender_device_id"] == str(alice.device.device_id)


def test_seal_without_a_key_for_the_epoch_is_refused_as_missing_key(alice: Account, world: World) -> None:
    world.keys[alice.device.device_id] = []
    core = Core(alice.secrets())

    refused, _ = drive(core, world, lambda f: core.seal(world.conversation, {"body": "x"}, f))

    assert isinstance(refused, Refused) and refused.error.reason == DecryptFailure.MISSING_KEY


def test_seal_with_a_given_message_id_keeps_it(alice: Account, world: World) -> None:
    core = Core(alice.secrets())
    mid = b"m" * 16

    sealed, _ = drive(core, world, lambda f: core.seal(world.conversation, {"body": "x"}, f, client_message_id=mid))

    assert isinstance(sealed, Sealed) and sealed.client_message_id == mid


# -- purity ----------------------------------------------------------------------------------------

CORE_DIR = Path(client.core.__file__).parent
IO_MODULES = {"client.transport", "client.store", "socket", "asyncio", "time", "pathlib", "httpx", "websockets"}


@pytest.mark.parametrize("path", sorted(CORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_transport_store_or_clock(path: Path) -> None:
    imported: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    assert not [name for name in imported if any(name == m or name.startswith(m + ".") for m in IO_MODULES)]
