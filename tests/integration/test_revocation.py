"""Revocation rotates (docs/protocol.md 2.14), through a real daphne server and real WebSockets:
the revoked device is refused at once on REST and WebSocket, every conversation it was in moves to
a new epoch wrapped only for the remaining devices, and even handed the ciphertext and helped by a
server that keeps answering it, it cannot decrypt anything sent after the revocation."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client import frames as fr
from client import protocol as proto
from client.crypto.encoding import b64e
from client.crypto.errors import DecryptError, DecryptFailure
from client.errors import RealtimeAuthError
from client.protocol import ApiError, Envelope
from client.realtime import Backoff, RealtimeClient
from client.session import ReceivedMessage, Session
from client.store.messages import MessageStore
from client.transport.http import HttpTransport

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = Backoff(initial=0.05, cap=0.5)
TIMEOUT = 20.0


class ColludingTransport:
    """A server that keeps answering a revoked device: everything a member may read (through a
    member's transport), and the revoked device's own wrapped keys straight from the database."""

    def __init__(self, member: HttpTransport, device_id: uuid.UUID) -> None:
        self.member = member
        self.device_id = device_id
        self.token: str | None = None

    def execute(self, request: proto.Request) -> tuple[int, Any]:
        if request.method == "GET" and request.path.endswith("/keys"):
            from conversations.models import WrappedKey

            conversation_id = request.path.split("/")[-2]
            rows = WrappedKey.objects.select_related("epoch__created_by__user", "wrapping_device__user").filter(
                recipient_device_id=self.device_id, epoch__conversation_id=conversation_id
            )
            keys = [
                {
                    "epoch": row.epoch.number,
                    "wrapped_key": b64e(bytes(row.wrapped_key)),
                    "signature": b64e(bytes(row.signature)),
                    "wrapped_by_device_id": str(row.wrapping_device_id),
                    "wrapped_by_username": row.wrapping_device.user.username,
                    "epoch_created_by_device_id": str(row.epoch.created_by_id),
                    "epoch_created_by_username": row.epoch.created_by.user.username,
                    "manifest": b64e(bytes(row.epoch.manifest)),
                    "manifest_signature": b64e(bytes(row.epoch.manifest_signature)),
                }
                for row in rows.order_by("epoch__number")
            ]
            return 200, {"keys": keys}
        return self.member.execute(request)


def _reason(session: Session, envelope: Envelope) -> DecryptFailure | None:
    try:
        session.decrypt(envelope)
    except DecryptError as exc:
        return exc.reason
    return None


def test_a_revoked_device_is_refused_at_once_and_reads_nothing_sent_after_revocation(
    sessions: Callable[..., Session], names: Callable[[str], str], tmp_path: Path, daphne_url: str
) -> None:
    laptop, bob, carol = sessions(names("alice"), "laptop"), sessions(names("bob")), sessions(names("carol"))
    phone = sessions(laptop.username, "phone", login=True)
    laptop.approve_link(phone.request_link())
    assert phone.complete_link()
    group = laptop.create_conversation([bob.username, carol.username]).conversation_id
    direct = bob.create_conversation([laptop.username], kind="direct").conversation_id
    pair = carol.create_conversation([laptop.username]).conversation_id
    bob.rotate_epoch(direct)  # epoch 2 before the revocation: not all conversations are at 1
    everywhere = (group, direct, pair)
    before = {cid: laptop.send_text(cid, f"before in {cid}").seq for cid in everywhere}
    # The phone reads everything up to now and keeps its keys in memory.
    for cid in everywhere:
        assert all(isinstance(r, ReceivedMessage) for r in phone.history(cid))
    epochs_before = {cid: phone.conversation(cid, refresh=True).current_epoch for cid in everywhere}

    for home in ("phone", "bob", "phone2"):
        (tmp_path / home).mkdir()

    async def scenario() -> tuple[RealtimeAuthError, list[fr.DeviceListChanged], float, dict[uuid.UUID, int]]:
        phone_rt = RealtimeClient(phone, MessageStore.open_in(tmp_path / "phone"), backoff=FAST)
        bob_rt = RealtimeClient(bob, MessageStore.open_in(tmp_path / "bob"), backoff=FAST)
        told: list[fr.DeviceListChanged] = []
        heard = asyncio.Event()

        def on_list(frame: fr.DeviceListChanged) -> None:
            told.append(frame)
            heard.set()

        bob_rt.on_device_list(on_list)
        for client in (phone_rt, bob_rt):
            await client.start()
            await client.wait_connected(TIMEOUT)
            await client.wait_caught_up(TIMEOUT)
        revoker = Session(laptop.secrets, HttpTransport(daphne_url))
        began = time.monotonic()
        result = await asyncio.to_thread(revoker.revoke_device, phone.device_id)
        revoke_s = time.monotonic() - began
        revoker.transport.close()  # type: ignore[attr-defined]
        assert result.device.status == "revoked"
        with pytest.raises(RealtimeAuthError) as closed:  # its open socket is closed at once
            await asyncio.wait_for(phone_rt.wait_stopped(), TIMEOUT)
        await asyncio.wait_for(heard.wait(), TIMEOUT)  # the other members hear of it
        # Bob sends live right away, under the new epoch.
        await (await bob_rt.send_text(group, "after, live from bob")).wait(TIMEOUT)
        for client in (phone_rt, bob_rt):
            await client.close()
            client.store.close()
        return closed.value, told, revoke_s, result.rotated

    closed, told, revoke_s, rotated = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert closed.close_code == 4401
    assert [t.username for t in told] == [laptop.username]
    # Every conversation it was in moved to a new epoch, made by the revoking device.
    assert rotated == {cid: epochs_before[cid] + 1 for cid in everywhere}

    # Refused at once on REST, and a new WebSocket is refused too.
    with pytest.raises(ApiError) as refused:
        phone.conversations()
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")

    async def reconnect() -> int:
        again = RealtimeClient(phone, MessageStore.open_in(tmp_path / "phone2"), backoff=FAST)
        await again.start()
        with pytest.raises(RealtimeAuthError) as caught:
            await again.wait_connected(TIMEOUT)
        await again.close()
        again.store.close()
        return caught.value.close_code

    assert asyncio.run(reconnect()) == 4401

    # Everyone keeps talking, in every conversation the phone was in (REST clients included).
    for cid in everywhere:
        for sender in (laptop, bob, carol):
            if sender.username in laptop.conversation(cid, refresh=True).members:
                sender.send_text(cid, f"after, {sender.username} in {cid}")

    from conversations.models import ChatKeyEpoch, WrappedKey

    helper = HttpTransport(daphne_url, token=laptop.secrets.token)
    colluding = Session(phone.secrets, ColludingTransport(helper, phone.device_id))
    colluding._chat_keys = dict(phone._chat_keys)  # everything it ever unwrapped, still in memory
    checked = 0
    for cid in everywhere:
        envelopes = laptop.envelopes(cid)
        after = [e for e in envelopes if e.seq > before[cid]]
        assert len(after) >= 2
        for envelope in after:
            assert envelope.epoch > epochs_before[cid]
            assert _reason(colluding, envelope) in (DecryptFailure.MISSING_KEY, DecryptFailure.UNKNOWN_EPOCH)
            with pytest.raises(ApiError):  # on its own it cannot even ask
                phone.decrypt(envelope)
            checked += 1
        # What came before the revocation it could read, and still can (no forward secrecy claim).
        assert isinstance(colluding.decrypt(next(e for e in envelopes if e.seq == before[cid])), ReceivedMessage)
        later = ChatKeyEpoch.objects.filter(conversation_id=cid, number__gt=epochs_before[cid])
        assert later.exists()
        assert not WrappedKey.objects.filter(epoch__in=later, recipient_device_id=phone.device_id).exists()
    helper.close()
    print(f"\nrevocation: revoke + rotate 3 conversations {revoke_s * 1000:.0f} ms; {checked} later unreadable")


def test_a_member_rotates_before_sending_when_the_epoch_still_reaches_a_revoked_device(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    from conversations.models import WrappedKey

    alice = register(names("alice"), "laptop")
    phone = link(alice, "phone")
    bob = register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id
    assert bob.send_text(cid, "before").epoch == 1
    # The revoking client did not rotate (an old client, or it crashed right after revoking).
    alice.revoke_device(phone.device_id, rotate=False)
    bob.forget_directory(alice.username)  # what a `device_list` frame makes the realtime client do

    envelope = bob.send_text(cid, "after")

    assert envelope.epoch == 2  # bob started epoch 2 first, without the phone
    assert WrappedKey.objects.filter(epoch__conversation_id=cid, epoch__number=2).count() == 2
    assert not WrappedKey.objects.filter(epoch__number=2, recipient_device_id=phone.device_id).exists()
    assert bob.send_text(cid, "and again").epoch == 2  # checked once: no rotation per message


def test_the_revoking_client_does_not_rotate_again_where_a_member_rotated_first(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    alice = register(names("alice"), "laptop")
    phone = link(alice, "phone")
    bob = register(names("bob"))
    first = alice.create_conversation([bob.username]).conversation_id
    second = alice.create_conversation([bob.username]).conversation_id
    alice.revoke_device(phone.device_id, rotate=False)
    assert bob.rotate_epoch(first) == 2

    assert alice.rotate_excluding({phone.device_id}) == {second: 2}
    assert alice.rotate_excluding({phone.device_id}) == {}  # idempotent


def test_an_operators_revocation_is_signed_by_the_next_client_and_rotation_follows(
    register: Callable[..., Session], link: Callable[[Session, str], Session], names: Callable[[str], str]
) -> None:
    from devices.models import Device
    from devices.services import device_revoke

    alice = register(names("alice"), "laptop")
    phone = link(alice, "phone")
    bob = register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id
    device_revoke(device=Device.objects.get(id=phone.device_id), reason="operator")

    signed = alice.sign_operator_revocations()

    assert [r.device_id for r in signed] == [phone.device_id]
    assert signed[0].rotated == {cid: 2}
    assert [e.change for e in alice.device_log()] == ["created", "linked", "revoked"]
    assert alice.sign_operator_revocations() == []
    assert bob.send_text(cid, "after").epoch == 2


def test_a_conversation_that_cannot_be_rekeyed_does_not_stop_the_others(
    register: Callable[..., Session],
    link: Callable[[Session, str], Session],
    names: Callable[[str], str],
    server_url: str,
) -> None:
    from tests.integration.test_attacks import _slip_in_device

    alice = register(names("alice"), "laptop")
    phone = link(alice, "phone")
    bob, dave = register(names("bob")), register(names("dave"))
    with_bob = alice.create_conversation([bob.username]).conversation_id
    with_dave = alice.create_conversation([dave.username]).conversation_id
    _slip_in_device(server_url, dave)  # dave's account now shows a device its list does not vouch for

    result = alice.revoke_device(phone.device_id)

    assert result.rotated == {with_bob: 2}
    assert list(result.failed) == [with_dave] and "vouched" in result.failed[with_dave]
