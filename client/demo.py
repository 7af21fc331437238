"""The scripted end-to-end demo: two people, three devices, real HTTP, real cryptography.

It prints what each device decrypts and what the server actually stored, then leaves the demo
devices' key stores on disk so a newcomer can carry on with the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

from client import frames as fr
from client.crypto.encoding import b64e
from client.realtime import IncomingMessage, RealtimeClient
from client.session import ReceivedMessage, Session, UndecryptableMessage
from client.store import keystore
from client.store.messages import MessageStore
from client.transport.http import HttpTransport

DEMO_PASSPHRASE = "demo passphrase"  # noqa: S105 - printed for the newcomer; guards demo keys only


def _say(step: str) -> None:
    print(f"\n== {step}")


def _view(label: str, session: Session, conversation_id: object) -> None:
    print(f"  [{label}]")
    for result in session.history(conversation_id):  # type: ignore[arg-type]
        if isinstance(result, ReceivedMessage):
            print(f"    #{result.seq} {result.sender_username}: {result.text}")
        else:
            print(f"    #{result.seq} UNDECRYPTABLE ({result.reason.value})")


LIVE_TEXT = "Anyone up for a call tonight?"


async def _live(home: Path, sender: Session, readers: list[tuple[str, Session]], conversation_id: uuid.UUID) -> None:
    """Realtime: connected devices get the message as it is stored and send receipts back.

    Each device's local message store goes into its demo directory (beside its key store), so
    `python -m client chat` there later shows what it received here.
    """
    directory = {"sender": "alice-phone", readers[0][0]: "bob", readers[1][0]: "carol"}
    clients: dict[str, RealtimeClient] = {}
    arrived: dict[str, asyncio.Future[IncomingMessage]] = {}
    receipts: dict[str, tuple[int, int]] = {}
    all_receipts = asyncio.Event()
    live_seq = [0]  # set once the server answered the send
    loop = asyncio.get_running_loop()
    for name, session in [("sender", sender), *readers]:
        (home / directory[name]).mkdir(parents=True, exist_ok=True, mode=0o700)
        clients[name] = RealtimeClient(session, MessageStore.open_in(home / directory[name]))
        arrived[name] = loop.create_future()
    for name, _ in readers:
        client = clients[name]

        async def on_message(message: IncomingMessage, name: str = name, client: RealtimeClient = client) -> None:
            if message.text == LIVE_TEXT and not arrived[name].done():
                arrived[name].set_result(message)
                await client.mark_read(conversation_id, message.seq)

        client.on_message(on_message)

    def check_receipts() -> None:
        if len(receipts) == len(readers) and all(read >= live_seq[0] > 0 for _, read in receipts.values()):
            all_receipts.set()

    def on_receipt(receipt: fr.Receipt) -> None:
        for entry in receipt.receipts:
            if entry.username != sender.username:
                old = receipts.get(entry.username, (0, 0))
                receipts[entry.username] = (max(old[0], entry.delivered_seq), max(old[1], entry.read_seq))
        check_receipts()

    clients["sender"].on_receipt(on_receipt)
    for client in clients.values():
        await client.start()
        await client.wait_caught_up(timeout=30)
    started = time.monotonic()
    pending = await clients["sender"].send_text(conversation_id, LIVE_TEXT)
    seq = await pending.wait(timeout=30)
    live_seq[0] = seq
    check_receipts()
    print(f"  sent: the server stored it as seq {seq} ({(time.monotonic() - started) * 1000:.0f} ms)")
    for name, _ in readers:
        message = await asyncio.wait_for(arrived[name], timeout=30)
        print(f"  {name} received live: #{message.seq} {message.sender_username}: {message.text}")
    await asyncio.wait_for(all_receipts.wait(), timeout=30)
    for name, (delivered, read) in sorted(receipts.items()):
        print(f"  receipt at the sender: {name} delivered up to #{delivered}, read up to #{read}")
    for client in clients.values():
        await client.close()


def run_demo(server: str, *, home: Path, suffix: str = "") -> int:
    alice_name, bob_name, carol_name = f"alice{suffix}", f"bob{suffix}", f"carol{suffix}"

    def password(user: str) -> str:
        return f"demo-password-for-{user}-2026"

    _say(f"{alice_name} registers from her laptop: identity key + device keys are made on the device")
    laptop = Session.register(
        HttpTransport(server),
        server_url=server,
        username=alice_name,
        password=password(alice_name),
        device_name="alice-laptop",
    )
    print(f"  laptop device {laptop.device_id}, fingerprint {laptop.fingerprint}")

    _say(f"{alice_name} logs in from her phone: the phone is pending until the laptop approves its link code")
    phone = Session.login(
        HttpTransport(server),
        server_url=server,
        username=alice_name,
        password=password(alice_name),
        device_name="alice-phone",
    )
    code = phone.request_link()
    print(f"  phone shows device {phone.device_id} with fingerprint {phone.fingerprint}")
    print(f"  and the link code {code}")
    laptop.approve_link(code)
    print("  the laptop checked the code's fingerprint against the keys the server holds, signed the phone")
    print("  into the account's device list and wrapped the account identity key for it")
    phone.complete_link()
    print("  the phone checked the approval with the code's one-time secret: it joined the genuine account")

    _say(f"{bob_name} and {carol_name} register, one device each")
    bob = Session.register(
        HttpTransport(server),
        server_url=server,
        username=bob_name,
        password=password(bob_name),
        device_name="bob-phone",
    )
    carol = Session.register(
        HttpTransport(server),
        server_url=server,
        username=carol_name,
        password=password(carol_name),
        device_name="carol-laptop",
    )

    _say("safety numbers: both sides compute the same 60 digits from the two identity keys")
    print(f"  {alice_name} sees: {laptop.safety_number(bob_name)}")
    print(f"  {bob_name} sees:   {bob.safety_number(alice_name)}")

    _say("a direct and a group conversation; each ChatKey is wrapped (HPKE) once per device")
    direct = laptop.create_conversation([bob_name], kind="direct")
    group = bob.create_conversation([alice_name, carol_name], kind="group")
    print(f"  direct {direct.conversation_id}\n  group  {group.conversation_id}")

    _say("messages both ways, from every device")
    laptop.send_text(direct.conversation_id, f"Hi {bob_name}, this is {alice_name} on my laptop.")
    bob.send_text(direct.conversation_id, f"Hello {alice_name}! Only our devices can read this.")
    phone.send_text(direct.conversation_id, "And this one comes from my phone.")
    bob.send_text(group.conversation_id, "Welcome to the group, everyone.")
    carol.send_text(group.conversation_id, "Glad to be here.")
    phone.send_text(group.conversation_id, "Lunch on Friday?")

    _say("what each device decrypts")
    for label, session in ((f"{alice_name} laptop", laptop), (f"{alice_name} phone", phone), (bob_name, bob)):
        _view(f"{label}, direct", session, direct.conversation_id)
    for label, session in ((f"{alice_name} phone", phone), (bob_name, bob), (carol_name, carol)):
        _view(f"{label}, group", session, group.conversation_id)

    _say("live over WebSockets: Bob and Carol are online; Alice's phone writes to the group")
    asyncio.run(_live(home, phone, [(bob_name, bob), (carol_name, carol)], group.conversation_id))

    _say("what the server stored (it has no key to any of it)")
    sample = bob.envelopes(direct.conversation_id)[0]
    print(f"  seq {sample.seq}, epoch {sample.epoch}, sender device {sample.sender_device_id}")
    print(f"  nonce      {b64e(sample.nonce)}")
    print(f"  ciphertext {b64e(sample.ciphertext)[:64]}... ({len(sample.ciphertext)} bytes)")
    print(f"  signature  {b64e(sample.signature)[:44]}...")

    _say("a tampered envelope: one flipped bit, rejected by the receiving device with a reason")
    flipped = bytearray(sample.ciphertext)
    flipped[0] ^= 0x01
    fresh_bob = Session(bob.secrets, HttpTransport(server))
    result = fresh_bob.receive(dataclasses.replace(sample, ciphertext=bytes(flipped)))
    outcome = result.reason.value if isinstance(result, UndecryptableMessage) else "accepted (this is a bug)"
    print(f"  result: {outcome}")

    for name, session in (("alice-laptop", laptop), ("alice-phone", phone), ("bob", bob), ("carol", carol)):
        (home / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        keystore.save(home / name / "keystore.json", DEMO_PASSPHRASE, session.secrets.to_dict())
    _say("carry on by hand: each demo device's encrypted key store is in " + str(home))
    print(f"  export E2EE_PASSPHRASE='{DEMO_PASSPHRASE}'")
    print(f"  .venv/bin/python -m client --home {home}/bob history {direct.conversation_id}")
    print(f"  .venv/bin/python -m client --home {home}/alice-phone send {group.conversation_id} 'typed by hand'")
    print(f"  .venv/bin/python -m client --home {home}/carol safety-number {alice_name}")
    return 0
