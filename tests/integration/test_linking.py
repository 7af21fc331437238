"""Linking a new device with full history (docs/protocol.md 4.7), through real sockets: the existing
device hears of the request over its WebSocket, approves with the code the new device shows, and the
new device reads every message ever sent; codes that are wrong, expired or reused change nothing, and
a flood of bad attempts is rate limited."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from client import frames as fr
from client import protocol as proto
from client.crypto.linking import link_code_decode, link_keys
from client.realtime import Backoff, RealtimeClient
from client.session import ReceivedMessage, Session
from client.store.messages import MessageStore
from client.transport.http import HttpTransport
from tests.integration.conftest import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = Backoff(initial=0.05, cap=0.5)


def _history(alice: Session, bob: Session, *, conversations: int, epochs: int, messages: int) -> dict[str, str]:
    """`messages` messages over `conversations` conversations and `epochs` epochs each, sent by
    both people; returns client-visible text by "<conversation>/<seq>"."""
    cids = [alice.create_conversation([bob.username]).conversation_id for _ in range(conversations)]
    slots = conversations * epochs
    sent: dict[str, str] = {}
    count = 0
    for epoch in range(1, epochs + 1):
        if epoch > 1:
            for cid in cids:
                alice.rotate_epoch(cid)
        for index, cid in enumerate(cids):
            slot = (epoch - 1) * conversations + index
            share = messages // slots + (1 if slot < messages % slots else 0)
            for _ in range(share):
                sender = alice if count % 2 == 0 else bob
                text = f"message {count} by {sender.username} in epoch {epoch}"
                envelope = sender.send_text(cid, text)
                sent[f"{cid}/{envelope.seq}"] = text
                count += 1
    assert count == messages
    return sent


def test_new_device_is_approved_over_the_websocket_and_reads_the_whole_history(
    sessions: Callable[..., Session], names: Callable[[str], str], tmp_path: Path, daphne_url: str
) -> None:
    started = time.monotonic()
    laptop, bob = sessions(names("alice"), "laptop"), sessions(names("bob"), "phone")
    sent = _history(laptop, bob, conversations=3, epochs=3, messages=500)
    history_s = time.monotonic() - started

    phone = sessions(laptop.username, "alice-phone", login=True)

    async def scenario() -> tuple[fr.LinkRequest, float, list[fr.DeviceListChanged]]:
        (tmp_path / "laptop").mkdir()
        (tmp_path / "bob").mkdir()
        laptop_rt = RealtimeClient(laptop, MessageStore.open_in(tmp_path / "laptop"), backoff=FAST)
        bob_rt = RealtimeClient(bob, MessageStore.open_in(tmp_path / "bob"), backoff=FAST)
        requests: asyncio.Queue[fr.LinkRequest] = asyncio.Queue()
        told: list[fr.DeviceListChanged] = []
        heard = asyncio.Event()

        async def on_request(frame: fr.LinkRequest) -> None:
            await requests.put(frame)

        def on_list(frame: fr.DeviceListChanged) -> None:
            told.append(frame)
            heard.set()

        laptop_rt.on_link_request(on_request)
        bob_rt.on_device_list(on_list)
        for client in (laptop_rt, bob_rt):
            await client.start()
            await client.wait_caught_up(timeout=60)
        # The new device shows its code; the laptop is told over its WebSocket.
        code = await asyncio.to_thread(phone.request_link)
        request = await asyncio.wait_for(requests.get(), 20)
        # The person types the code the phone shows into the laptop.
        approver = Session(laptop.secrets, HttpTransport(daphne_url))
        began = time.monotonic()
        await asyncio.to_thread(approver.approve_link, code)
        approve_s = time.monotonic() - began
        approver.transport.close()  # type: ignore[attr-defined]
        await asyncio.wait_for(heard.wait(), 20)  # other members' devices are told
        for client in (laptop_rt, bob_rt):
            await client.close()
            client.store.close()
        return request, approve_s, told

    request, approve_s, told = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert request.device_id == phone.device_id and request.name == "alice-phone"
    assert (request.x25519_public_key, request.ed25519_public_key) == (
        phone.secrets.device.x25519_public_key,
        phone.secrets.device.ed25519_public_key,
    )
    assert [(t.username, t.version) for t in told] == [(laptop.username, 2)]

    # The phone checks the approval with its one-time secret and takes the identity key.
    assert phone.complete_link()
    assert phone.secrets.identity is not None
    assert phone.secrets.identity.public_key == laptop.secrets.identity.public_key  # type: ignore[union-attr]

    began = time.monotonic()
    read: dict[str, str] = {}
    for conversation in phone.conversations():
        for result in phone.history(conversation.conversation_id):
            assert isinstance(result, ReceivedMessage), result
            read[f"{conversation.conversation_id}/{result.seq}"] = result.text
    read_s = time.monotonic() - began
    assert read == sent  # 100%: all 500 messages of 3 conversations and 3 epochs
    assert {c.current_epoch for c in phone.conversations()} == {3}

    # Other members include the new device from then on: Bob's next epoch covers it.
    cid = next(iter(phone.conversations())).conversation_id
    bob.rotate_epoch(cid)
    envelope = bob.send_text(cid, "welcome, new phone")
    assert phone.decrypt(envelope).text == "welcome, new phone"
    print(
        f"\nlinking timings: history of 500 sent in {history_s:.1f} s, approval (9 epochs wrapped) "
        f"{approve_s * 1000:.0f} ms, 500 messages read and decrypted by the new device in {read_s:.1f} s"
    )


def test_approval_wraps_many_conversations_in_batches(
    register: Callable[[str, str], Session], server_url: str, names: Callable[[str], str]
) -> None:
    laptop = register(names("alice"), "laptop")
    conversations = 100  # within the `upload_device` limit of 120 per minute
    for _ in range(conversations):
        laptop.create_conversation([])
    phone = Session.login(
        HttpTransport(server_url), server_url=server_url, username=laptop.username, password=PASSWORD, device_name="p"
    )
    began = time.monotonic()
    result = laptop.approve_link(phone.request_link(), batch_size=40)
    seconds = time.monotonic() - began
    assert (result.wrapped_keys, result.upload_requests) == (conversations, 3)
    assert phone.complete_link()
    for conversation in phone.conversations():
        assert phone.chat_key(conversation, 1)
    print(f"\napproval for {conversations} conversations: {seconds:.2f} s in {result.upload_requests} uploads")


def _approve_raw(session: Session, device_id: uuid.UUID, code: str | None = None) -> proto.Request:
    """An approval request with a verifier from `code` (or random bytes): only the verifier matters
    for the server's code check."""
    verifier = link_keys(secret=link_code_decode(code).secret, device_id=device_id).verifier if code else bytes(32)
    return proto.Request(
        "POST",
        f"{proto.API_PREFIX}/devices/{device_id}/link/approve",
        {
            "verifier": base64.b64encode(verifier).decode(),
            "vouch_signature": "A" * 86 + "==",
            "device_list": {
                "version": 2,
                "prev_hash": "A" * 43 + "=",
                "change": "linked",
                "subject_device_id": str(device_id),
                "actor_device_id": str(session.device_id),
                "timestamp_ms": 0,
                "devices": [],
                "signature": "A" * 86 + "==",
            },
            "wrapped_identity_key": "A" * 107 + "=",
            "approval_mac": "A" * 43 + "=",
        },
    )


def test_a_thousand_concurrent_bad_codes_are_rate_limited_and_change_nothing(
    sessions: Callable[..., Session], daphne_url: str, names: Callable[[str], str]
) -> None:
    from devices.models import Device, DeviceListEntry, LinkRequest

    laptop = sessions(names("alice"), "laptop")
    phone = sessions(laptop.username, "phone", login=True)
    phone.request_link()
    request = _approve_raw(laptop, phone.device_id)
    headers = {"Authorization": f"Bearer {laptop.secrets.token}"}
    local = threading.local()

    def attempt(_: int) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=daphne_url, timeout=60)
        return int(local.client.post(request.path, json=request.json, headers=headers).status_code)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(attempt, range(1000)))
    seconds = time.monotonic() - began
    refused = statuses.count(403)  # link_code_invalid: reached the code check, changed nothing
    assert statuses.count(429) >= 990 and refused <= 10 and refused + statuses.count(429) == 1000, set(statuses)
    assert Device.objects.get(pk=phone.device_id).status == Device.Status.PENDING
    assert DeviceListEntry.objects.filter(user__username=laptop.username).count() == 1
    assert LinkRequest.objects.get(device_id=phone.device_id).status == LinkRequest.Status.WAITING
    print(f"\n1,000 concurrent bad approvals: {refused} checked and refused, the rest 429, in {seconds:.1f} s")


def test_the_new_device_refuses_an_approval_the_server_made_or_altered(
    register: Callable[[str, str], Session], server_url: str, names: Callable[[str], str]
) -> None:
    """The server holds only the verifier's hash and the MAC: whatever it changes in the approval
    (another identity key and list, i.e. an account it made up, or the MAC itself), the new device
    refuses to join, and keeps no identity key."""
    from client.errors import LinkApprovalInvalidError
    from devices.models import LinkRequest

    laptop = register(names("alice"), "laptop")
    phone = Session.login(
        HttpTransport(server_url), server_url=server_url, username=laptop.username, password=PASSWORD, device_name="p"
    )
    laptop.approve_link(phone.request_link())
    stored = LinkRequest.objects.get(device_id=phone.device_id)
    assert stored.approval_mac is not None
    genuine_mac = bytes(stored.approval_mac)
    altered = bytearray(genuine_mac)
    altered[0] ^= 1
    LinkRequest.objects.filter(pk=stored.pk).update(approval_mac=bytes(altered))
    with pytest.raises(LinkApprovalInvalidError, match="link code"):
        phone.complete_link()
    assert phone.secrets.identity is None

    # An identity key of the server's own: the device list no longer verifies under it.
    from accounts.models import User

    user = User.objects.get(username=laptop.username)
    genuine_key = bytes(user.identity_key)
    User.objects.filter(pk=user.pk).update(identity_key=bytes(32))
    LinkRequest.objects.filter(pk=stored.pk).update(approval_mac=genuine_mac)
    with pytest.raises(LinkApprovalInvalidError):
        phone.complete_link()
    assert phone.secrets.identity is None

    User.objects.filter(pk=user.pk).update(identity_key=genuine_key)
    assert phone.complete_link()  # the genuine approval, untouched, is accepted
