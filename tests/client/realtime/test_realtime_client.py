"""RealtimeClient against a scripted fake gateway (websockets.serve on loopback) that speaks §6.

The session is a stub: messages pushed by the fake carry their payload JSON as "ciphertext"
(b"bad" means undecryptable); the client's own sends are sealed and opened with the real crypto.
Everything waits on conditions with timeouts, never on bare sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from client import protocol as proto
from client.core.envelope import envelope_seal
from client.core.needs import Fetches
from client.crypto.encoding import b64e
from client.crypto.errors import DecryptFailure
from client.crypto.keys import DeviceKeyPair
from client.crypto.lists_seen import ListSeen, lists_seen_encode
from client.crypto.message import message_header, message_open
from client.errors import RealtimeAuthError, SendFailedError
from client.pacing import FRAME_RATE, SEND_RATE, Rate
from client.realtime import Backoff, IncomingMessage, RealtimeClient
from client.session import ReceivedMessage, Session, UndecryptableMessage
from client.store.messages import MessageStore
from harness.polling import wait_until

CID = uuid.UUID("6f1c0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2a")
BOB_DEV = uuid.UUID("0b0b0a0e-4c1e-4a8e-9d55-0b7b8c0f1e2b")
CHAT_KEY = b"k" * 32
LISTS = lists_seen_encode([ListSeen("alice", 1, b"\xaa" * 32), ListSeen("bob", 1, b"\xbb" * 32)])
FAST = Backoff(initial=0.02, cap=0.1)
TIMEOUT = 10.0


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))


until = partial(wait_until, timeout=TIMEOUT)


class StubSession:
    """What RealtimeClient needs of a Session, without a server."""

    def __init__(self) -> None:
        self.device = DeviceKeyPair.generate()
        self.secrets = SimpleNamespace(server_url="", token="tok", device=self.device)
        self.username = "alice"
        self.device_id = self.device.device_id
        self.fail_transiently = False
        # Open key requests to answer on connect (client.key_requests): none.
        self.transport = SimpleNamespace(execute=lambda request: (200, {"key_requests": []}))

    def conversation(self, conversation_id: uuid.UUID) -> proto.Conversation:
        return proto.Conversation(conversation_id, "group", ["alice", "bob"], 1, 0, "t")

    def chat_key(self, conversation: proto.Conversation, epoch: int) -> bytes:
        return CHAT_KEY

    def conversation_for_send(self, conversation_id: uuid.UUID) -> proto.Conversation:
        return self.conversation(conversation_id)

    def seal_send(
        self,
        conversation: proto.Conversation,
        payload: dict[str, Any],
        *,
        client_message_id: bytes | None = None,
        rng: Callable[[int], bytes] | None = None,
        attachments: list[uuid.UUID] | None = None,
    ) -> tuple[proto.Request, bytes]:
        # The real sealing, over this stub's keys: the client's own sends use the real crypto.
        sealed = envelope_seal(
            chat_key=self.chat_key(conversation, conversation.current_epoch),
            conversation_id=conversation.conversation_id,
            epoch=conversation.current_epoch,
            sender=self.device,
            payload=payload,
            lists_seen=self.lists_seen(conversation),
            rng=rng or os.urandom,
            client_message_id=client_message_id,
            attachments=attachments,
        )
        return sealed.request, sealed.client_message_id

    def lists_seen(self, conversation: proto.Conversation) -> bytes:
        return LISTS

    def key_refused(self, conversation_id: uuid.UUID, epoch: int) -> bool:
        return False  # this stub's keys are never refused

    def receive_step(self, envelope: proto.Envelope, fetches: Fetches) -> ReceivedMessage | UndecryptableMessage:
        return self.receive(envelope)  # this stub lacks nothing

    def receive(self, envelope: proto.Envelope) -> ReceivedMessage | UndecryptableMessage:
        if self.fail_transiently:
            raise proto.ApiError(503, "unavailable", "the directory is down")
        if envelope.sender_device_id == self.device_id:
            header = message_header(
                conversation_id=envelope.conversation_id,
                epoch=envelope.epoch,
                sender_device_id=envelope.sender_device_id,
                client_message_id=envelope.client_message_id,
                device_lists=envelope.device_lists,
            )
            payload = message_open(
                chat_key=CHAT_KEY, header=header, nonce=envelope.nonce, ciphertext=envelope.ciphertext
            )
        elif envelope.ciphertext == b"bad":
            return UndecryptableMessage(
                envelope.seq, envelope.conversation_id, envelope.sender_username, envelope.sender_device_id,
                DecryptFailure.BAD_SIGNATURE, "forged",
            )  # fmt: skip
        else:
            payload = json.loads(envelope.ciphertext)
        return ReceivedMessage(
            envelope.seq, envelope.conversation_id, envelope.sender_username, envelope.sender_device_id,
            envelope.epoch, payload, envelope.created_at,
        )  # fmt: skip


def pushed(seq: int, text: str = "", *, mid: bytes | None = None, ciphertext: bytes | None = None) -> dict[str, Any]:
    """A `message` frame from bob."""
    body = ciphertext if ciphertext is not None else json.dumps({"type": "text", "body": text or f"m{seq}"}).encode()
    return {
        "type": "message",
        "conversation_id": str(CID),
        "envelope": {
            "seq": seq,
            "conversation_id": str(CID),
            "version": 1,
            "epoch": 1,
            "sender_device_id": str(BOB_DEV),
            "sender_username": "bob",
            "client_message_id": b64e(mid or seq.to_bytes(16, "big")),
            "nonce": b64e(b"n" * 12),
            "ciphertext": b64e(body),
            "signature": b64e(b"s" * 64),
            "device_lists": b64e(LISTS),
            "created_at": "2026-11-25T19:00:00Z",
        },
    }


class FakeGateway:
    """Accepts `hello`, answers `welcome`, records every frame; optionally answers sends itself."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, dict[str, Any]]] = []  # (connection number, frame)
        self.connections: list[ServerConnection] = []
        self.answer_sends = True
        self.refuse: tuple[int, str] | None = None
        self.seqs: dict[str, int] = {}  # client_message_id -> seq (idempotent like the server)
        self.last_seq = 0
        self.on_frame: Callable[[ServerConnection, dict[str, Any]], Awaitable[None]] | None = None
        self._server: Server | None = None

    async def __aenter__(self) -> FakeGateway:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, subprotocols=[Subprotocol("e2ee.v1")], ping_interval=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def live(self) -> ServerConnection:
        return self.connections[-1]

    async def push(self, frame: dict[str, Any]) -> None:
        await self.live.send(json.dumps(frame))

    def of_type(self, kind: str, connection: int | None = None) -> list[dict[str, Any]]:
        return [f for n, f in self.frames if f["type"] == kind and (connection is None or n == connection)]

    async def _handle(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello == {"type": "hello", "v": 1, "token": "tok"}
        if self.refuse is not None:
            code, error = self.refuse
            self.connections.append(ws)
            await ws.send(json.dumps({"type": "error", "code": error, "message": "no"}))
            await ws.close(code)
            return
        self.connections.append(ws)
        number = len(self.connections)
        await ws.send(json.dumps({"type": "welcome", "v": 1, "device_id": str(uuid.uuid4()), "username": "alice",
                                  "heartbeat_s": 30}))  # fmt: skip
        try:
            async for raw in ws:
                frame = json.loads(raw)
                self.frames.append((number, frame))
                if frame["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong", "id": frame["id"]}))
                elif self.on_frame is not None:
                    await self.on_frame(ws, frame)
                elif frame["type"] == "send" and self.answer_sends:
                    await ws.send(json.dumps(self.sent_for(frame)))
        except ConnectionClosed:
            pass

    def sent_for(self, frame: dict[str, Any]) -> dict[str, Any]:
        mid = frame["envelope"]["client_message_id"]
        created = mid not in self.seqs
        if created:
            self.last_seq += 1
            self.seqs[mid] = self.last_seq
        return {"type": "sent", "id": frame["id"], "conversation_id": frame["conversation_id"],
                "seq": self.seqs[mid], "client_message_id": mid, "created": created, "created_at": "t"}  # fmt: skip


def make_client(
    gw: FakeGateway, store: MessageStore, session: StubSession | None = None, **kwargs: Any
) -> RealtimeClient:
    return RealtimeClient(cast(Session, session or StubSession()), store, server_url=gw.url, backoff=FAST, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> MessageStore:
    return MessageStore.open_in(tmp_path)


# -- tests --------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff, rand = Backoff(initial=0.5, cap=10.0), random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (60, 10.0)]:
        delays = [backoff.delay(attempt, rand) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_queued_sends_are_replayed_in_order_after_a_reconnect(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.answer_sends = False  # the first connection "loses" every answer
            client = make_client(gw, store)
            await client.start()
            await client.wait_connected(TIMEOUT)
            pending = [await client.send_text(CID, f"hello {i}") for i in range(3)]
            await until(lambda: len(gw.of_type("send", 1)) == 3)
            gw.answer_sends = True
            await gw.live.close(1012)  # server restarting
            seqs = [await p.wait(TIMEOUT) for p in pending]
            resent = gw.of_type("send", 2)
            assert [f["id"] for f in resent] == [f["id"] for f in gw.of_type("send", 1)]
            assert seqs == [1, 2, 3]
            assert store.outbox() == []
            assert client.connections == 2
            await client.close()

    run(scenario())


def test_the_outbox_survives_a_restart_and_is_delivered_once_in_order(tmp_path: Path) -> None:
    session = StubSession()

    async def offline_then_online() -> None:
        async with FakeGateway() as gw:
            url = gw.url
        # Nothing listens on `url` now: the client keeps retrying while messages queue up.
        first = RealtimeClient(cast(Session, session), MessageStore.open_in(tmp_path), server_url=url, backoff=FAST)
        await first.start()
        for i in range(3):
            await first.send_text(CID, f"queued {i}")
        await first.close()
        first.store.close()

        async with FakeGateway() as gw:
            store = MessageStore.open_in(tmp_path)
            assert len(store.outbox()) == 3
            second = RealtimeClient(cast(Session, session), store, server_url=gw.url, backoff=FAST)
            await second.start()
            await until(lambda: store.outbox() == [])
            sends = gw.of_type("send")
            assert len(sends) == 3 and len(gw.seqs) == 3
            bodies = [store.messages(CID)[i].text for i in range(3)]
            assert bodies == ["queued 0", "queued 1", "queued 2"]
            await second.close()

    run(offline_then_online())


def test_an_auth_refusal_stops_the_client_without_reconnecting(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.refuse = (4401, "invalid_token")
            client = make_client(gw, store)
            await client.start()
            with pytest.raises(RealtimeAuthError) as caught:
                await client.wait_connected(TIMEOUT)
            assert caught.value.close_code == 4401 and caught.value.error_code == "invalid_token"
            assert len(gw.connections) == 1
            await client.close()
            assert client.auth_error is caught.value

    run(scenario())


def test_messages_are_stored_then_acknowledged_and_duplicates_dropped(store: MessageStore) -> None:
    acks: list[tuple[int, bool]] = []  # (acknowledged seq, was it in the store when the ack arrived)

    async def scenario() -> None:
        async with FakeGateway() as gw:

            async def record_acks(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] == "ack":
                    acks.append((frame["seq"], store.has_position(CID, frame["seq"])))

            gw.on_frame = record_acks
            client = make_client(gw, store, ack_delay_s=0)  # one ack per message, to see each
            seen: list[IncomingMessage] = []
            client.on_message(seen.append)
            await client.start()
            await client.wait_connected(TIMEOUT)
            await gw.push(pushed(1, "one"))
            await gw.push(pushed(2, "two"))
            await gw.push(pushed(2, "two"))  # the server pushes again (our ack was lost)
            await until(lambda: len(acks) == 3)
            assert acks == [(1, True), (2, True), (2, True)]
            assert [(m.seq, m.sender_username, m.text) for m in seen] == [(1, "bob", "one"), (2, "bob", "two")]
            assert [m.text for m in store.messages(CID)] == ["one", "two"]
            await client.close()

    run(scenario())


def test_acknowledgements_are_coalesced_and_a_redelivery_is_acknowledged_again(store: MessageStore) -> None:
    acks: list[tuple[int, bool]] = []

    async def scenario() -> None:
        async with FakeGateway() as gw:

            async def record_acks(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] == "ack":
                    acks.append((frame["seq"], all(store.has_position(CID, s) for s in range(1, frame["seq"] + 1))))

            gw.on_frame = record_acks
            client = make_client(gw, store, ack_delay_s=0.2)
            await client.start()
            await client.wait_connected(TIMEOUT)
            for seq in range(1, 51):  # a catch-up burst
                await gw.push(pushed(seq, f"m{seq}"))
            await until(lambda: bool(acks) and acks[-1][0] == 50)
            assert len(acks) <= 10, acks  # not one per message (about 1 when the burst is quick)
            assert all(stored for _, stored in acks), acks  # never ahead of the store
            assert [a for a, _ in acks] == sorted(a for a, _ in acks)
            await gw.push(pushed(50, "m50"))  # pushed again: that ack was lost on the way
            await until(lambda: len(acks) >= 2 and acks[-1] == (50, True) and acks.count((50, True)) == 2)
            assert len(store.messages(CID)) == 50
            await client.close()

    run(scenario())


def test_a_message_that_cannot_be_processed_yet_is_neither_stored_nor_acknowledged(store: MessageStore) -> None:
    session = StubSession()

    async def scenario() -> None:
        async with FakeGateway() as gw:
            client = make_client(gw, store, session)
            await client.start()
            await client.wait_connected(TIMEOUT)
            session.fail_transiently = True
            await gw.push(pushed(1))
            await client.ping()  # the push has been handled once the pong is back
            assert store.messages(CID) == [] and gw.of_type("ack") == []
            session.fail_transiently = False
            await gw.push(pushed(1))  # the server's retry
            await until(lambda: len(gw.of_type("ack")) == 1)
            assert gw.of_type("ack")[0]["seq"] == 1
            await client.close()

    run(scenario())


def test_undecryptable_messages_are_stored_with_their_reason_and_acknowledged(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            client = make_client(gw, store)
            seen: list[IncomingMessage] = []
            client.on_message(seen.append)
            await client.start()
            await client.wait_connected(TIMEOUT)
            await gw.push(pushed(1, ciphertext=b"bad"))
            await until(lambda: len(gw.of_type("ack")) == 1)
            [stored] = store.messages(CID)
            assert stored.failure == "bad_signature" and stored.payload is None
            assert seen[0].failure is DecryptFailure.BAD_SIGNATURE
            await client.close()

    run(scenario())


def test_the_same_message_id_at_another_position_is_a_replay(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            client = make_client(gw, store, ack_delay_s=0)
            await client.start()
            await client.wait_connected(TIMEOUT)
            await gw.push(pushed(1, "original", mid=b"r" * 16))
            await gw.push(pushed(2, "original", mid=b"r" * 16))
            await until(lambda: [f["seq"] for f in gw.of_type("ack")] == [1, 2])
            first, second = store.messages(CID)
            assert first.text == "original" and second.failure == "replayed"
            await client.close()

    run(scenario())


def test_a_lasting_gap_is_fetched_and_then_acknowledged_cumulatively(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:

            async def answer_fetch(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] == "fetch":
                    await ws.send(json.dumps(pushed(2)))
                    await ws.send(json.dumps({"type": "fetched", "id": frame["id"], "conversation_id": str(CID),
                                              "next_after": 2, "has_more": False}))  # fmt: skip

            gw.on_frame = answer_fetch
            client = make_client(gw, store, gap_fetch_after_s=0.2)
            await client.start()
            await client.wait_connected(TIMEOUT)
            await gw.push(pushed(1))
            await gw.push(pushed(3))
            await until(lambda: any(f["seq"] == 3 for f in gw.of_type("ack")))
            [fetch] = gw.of_type("fetch")
            assert (fetch["after"], fetch["limit"]) == (1, 2)
            assert [f["seq"] for f in gw.of_type("ack")] == [1, 3]
            assert store.contiguous_seq(CID) == 3
            await client.close()

    run(scenario())


def test_a_hole_below_only_own_sends_is_waited_for_not_fetched(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.last_seq = 2  # bob's messages 1 and 2 are stored but the server is behind pushing
            client = make_client(gw, store, gap_fetch_after_s=0.1)
            await client.start()
            await client.wait_connected(TIMEOUT)
            assert await (await client.send_text(CID, "mine")).wait(TIMEOUT) == 3
            await asyncio.sleep(0.5)  # five times the gap delay
            assert gw.of_type("fetch") == []
            await gw.push(pushed(1))
            await gw.push(pushed(2))
            await until(lambda: any(f["seq"] == 3 for f in gw.of_type("ack")))
            assert store.contiguous_seq(CID) == 3 and gw.of_type("fetch") == []
            await gw.push(pushed(5))  # a pushed message beyond a hole: that one is fetched
            await until(lambda: len(gw.of_type("fetch")) == 1)
            assert gw.of_type("fetch")[0]["after"] == 3
            await client.close()

    run(scenario())


def test_own_sent_messages_move_the_contiguous_cursor(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.last_seq = 1  # bob's message 1 exists
            client = make_client(gw, store)
            seen: list[IncomingMessage] = []
            client.on_message(seen.append)
            await client.start()
            await client.wait_connected(TIMEOUT)
            await gw.push(pushed(1))
            assert await (await client.send_text(CID, "mine")).wait(TIMEOUT) == 2
            await gw.push(pushed(3))
            await until(lambda: any(f["seq"] == 3 for f in gw.of_type("ack")))
            assert [m.text for m in store.messages(CID)] == ["m1", "mine", "m3"]
            assert [m.seq for m in seen] == [1, 3]  # no callback for this device's own sends
            assert gw.of_type("fetch") == []
            await client.close()

    run(scenario())


def test_a_refused_send_fails_and_leaves_the_outbox_a_rate_limited_one_is_retried(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            attempts: dict[str, int] = {}

            async def refuse_then_accept(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] != "send":
                    return
                attempts[frame["id"]] = attempts.get(frame["id"], 0) + 1
                first_message = frame["id"] == min(attempts)
                code = None
                if first_message and attempts[frame["id"]] == 1:
                    code = "rate_limited"
                elif not first_message:
                    code = "conversation_not_found"
                if code is None:
                    await ws.send(json.dumps(gw.sent_for(frame)))
                else:
                    extra = {"retry_after_s": 0} if code == "rate_limited" else {}
                    await ws.send(json.dumps({"type": "error", "id": frame["id"], "code": code, "message": code,
                                              "extra": extra}))  # fmt: skip

            gw.on_frame = refuse_then_accept
            client = make_client(gw, store)
            failures: list[SendFailedError] = []
            client.on_send_failed(lambda item: failures.append(item[1]))
            await client.start()
            await client.wait_connected(TIMEOUT)
            retried = await client.send_text(CID, "first")
            assert await retried.wait(TIMEOUT) == 1  # rate limited once, then resent and stored
            refused = await client.send_text(CID, "second")
            with pytest.raises(SendFailedError) as caught:
                await refused.wait(TIMEOUT)
            assert caught.value.error_code == "conversation_not_found"
            assert [f.error_code for f in failures] == ["conversation_not_found"]
            assert store.outbox() == []
            await client.close()

    run(scenario())


def test_receipts_typing_and_presence_reach_the_callbacks_and_queries(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:

            async def answer_presence(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] == "presence":
                    users = {u: {"online": u == "bob"} for u in frame["usernames"]}
                    await ws.send(json.dumps({"type": "presence", "id": frame["id"], "users": users}))

            gw.on_frame = answer_presence
            client = make_client(gw, store)
            events: list[object] = []
            client.on_receipt(events.append)
            client.on_typing(events.append)
            client.on_presence(events.append)
            await client.start()
            await client.wait_connected(TIMEOUT)
            assert await client.presence(["bob", "carol"]) == {"bob": True, "carol": False}
            await gw.push({"type": "receipt", "conversation_id": str(CID), "receipts": [
                {"username": "bob", "device_id": str(BOB_DEV), "delivered_seq": 4, "read_seq": 3}]})  # fmt: skip
            await gw.push({"type": "typing", "conversation_id": str(CID), "username": "bob",
                           "device_id": str(BOB_DEV), "state": "start", "expires_in_ms": 6000})  # fmt: skip
            await gw.push({"type": "presence", "users": {"bob": {"online": False}}})
            await until(lambda: len(events) == 3)
            assert [type(e).__name__ for e in events] == ["Receipt", "Typing", "Presence"]
            assert [(r.delivered_seq, r.read_seq) for r in store.receipts(CID)] == [(4, 3)]
            assert await client.typing(CID, True)
            await client.mark_read(CID, 3)
            await until(lambda: len(gw.of_type("read")) == 1)
            assert gw.of_type("typing")[0]["state"] == "start"
            assert gw.of_type("read")[0]["seq"] == 3
            await client.close()

    run(scenario())


def test_a_read_receipt_made_offline_is_sent_on_the_next_connection(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            client = make_client(gw, store)
            await client.mark_read(CID, 7)  # not started: nothing to send it on
            await client.start()
            await until(lambda: len(gw.of_type("read")) == 1)
            assert gw.of_type("read")[0] == {"type": "read", "conversation_id": str(CID), "seq": 7}
            assert store.unreported_reads() == []
            await client.close()

    run(scenario())


# -- sending within the server's limits (issue 13, F1) --------------------------------------------


def refuse_first(gw: FakeGateway, count: int, code: str, extra: dict[str, Any] | None = None) -> list[float]:
    """Answer the first `count` send frames with `code`, the others as stored; the arrival time of
    every send frame."""
    arrivals: list[float] = []

    async def on_frame(ws: ServerConnection, frame: dict[str, Any]) -> None:
        if frame["type"] != "send":
            return
        arrivals.append(time.monotonic())
        if len(arrivals) <= count:
            refusal = {"type": "error", "id": frame["id"], "code": code, "message": code, "extra": extra or {}}
            await ws.send(json.dumps(refusal))
        else:
            await ws.send(json.dumps(gw.sent_for(frame)))

    gw.on_frame = on_frame
    return arrivals


def test_an_outage_refusing_every_send_costs_one_resend_per_message_not_a_storm(store: MessageStore) -> None:
    """F1: every transient refusal used to resend the whole rest of the outbox (30 refusals: 465
    resends), which kept the server refusing. Now each refused message goes once more, after a pause."""

    async def scenario() -> None:
        async with FakeGateway() as gw:
            refuse_first(gw, 30, "internal_error")  # the server's Redis is down for 30 sends
            client = make_client(gw, store, send_retry=Backoff(initial=0.05, cap=0.2))
            pending = [await client.send_text(CID, f"m{i}") for i in range(30)]  # queued offline
            await client.start()
            seqs = [await p.wait(TIMEOUT) for p in pending]
            assert len(gw.of_type("send")) == 60  # each message: refused once, resent once
            assert seqs == list(range(1, 31))  # still in queue order
            assert store.outbox() == []
            await client.close()

    run(scenario())


def test_a_refusal_that_comes_late_still_keeps_the_senders_order(store: MessageStore) -> None:
    """The server refuses every send behind a transiently refused one until that one comes again
    (protocol.md 6.3); here the refusal of the second message is slow to come back (a stalled
    link), later than the client's pause. The client must send again from the first refused
    message on, in queue order, not only the refusals it has heard of: the third must not be
    stored before the second."""

    async def scenario() -> None:
        async with FakeGateway() as gw:
            frames_seen: list[str] = []
            blocked: list[str] = []  # the refused message's id while the server's gate is closed

            async def refuse_late(ws: ServerConnection, refusal: dict[str, Any]) -> None:
                await asyncio.sleep(0.3)
                await ws.send(json.dumps(refusal))

            async def on_frame(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] != "send":
                    return
                mid = frame["envelope"]["client_message_id"]
                frames_seen.append(mid)
                refusal = {"type": "error", "id": frame["id"], "code": "internal_error", "message": "", "extra": {}}
                if len(frames_seen) == 1:  # the first send fails (Redis down a moment)
                    blocked.append(mid)
                    await ws.send(json.dumps(refusal))
                elif blocked and blocked[0] != mid:  # behind it: refused too
                    if len(frames_seen) == 2:
                        asyncio.get_running_loop().create_task(refuse_late(ws, refusal))
                    else:
                        await ws.send(json.dumps(refusal))
                else:
                    blocked.clear()
                    await ws.send(json.dumps(gw.sent_for(frame)))

            gw.on_frame = on_frame
            client = make_client(gw, store, send_retry=Backoff(initial=0.05, cap=0.1))
            pending = [await client.send_text(CID, f"m{i}") for i in range(3)]  # queued offline
            await client.start()
            seqs = [await p.wait(TIMEOUT) for p in pending]
            assert seqs == [1, 2, 3]  # stored in queue order
            await client.close()

    run(scenario())


def test_a_transient_refusal_of_a_message_already_stored_makes_the_client_reconnect(store: MessageStore) -> None:
    """A copy of a message was stored and answered; another copy of it, sent again after a late
    refusal, is refused for a transient reason: the server refuses every later send of the
    connection until that message comes again (protocol.md 6.3), which it never will (it left the
    outbox). The client connects anew, where nothing is held back."""

    async def scenario() -> None:
        async with FakeGateway() as gw:

            async def on_frame(ws: ServerConnection, frame: dict[str, Any]) -> None:
                if frame["type"] != "send":
                    return
                await ws.send(json.dumps(gw.sent_for(frame)))
                if len(gw.connections) == 1:
                    refusal = {"type": "error", "id": frame["id"], "code": "internal_error", "message": "", "extra": {}}
                    await ws.send(json.dumps(refusal))

            gw.on_frame = on_frame
            client = make_client(gw, store)
            await client.start()
            await client.wait_connected(TIMEOUT)
            assert await (await client.send_text(CID, "stored, then refused")).wait(TIMEOUT) == 1
            await until(lambda: client.connections == 2)
            await client.close()

    run(scenario())


def test_a_new_connection_starts_the_send_pauses_over(store: MessageStore) -> None:
    """Refusals without a `sent` lengthen the pause before sending again, up to `send_retry.cap`;
    a new connection (a server restarted, a new route) starts them over from `initial`, so a
    device does not sit idle for a long pause earned against the server it left."""

    async def scenario() -> None:
        async with FakeGateway() as gw:
            arrivals: list[tuple[int, float]] = []  # (connection number, time) of each send frame
            refusing = 5  # refusals on the first connection, then one on the next

            async def on_frame(ws: ServerConnection, frame: dict[str, Any]) -> None:
                nonlocal refusing
                if frame["type"] != "send":
                    return
                arrivals.append((len(gw.connections), time.monotonic()))
                if refusing > 0:
                    refusing -= 1
                    refusal = {"type": "error", "id": frame["id"], "code": "internal_error", "message": "", "extra": {}}
                    await ws.send(json.dumps(refusal))
                    if refusing == 0 and len(gw.connections) == 1:
                        refusing = 1
                        await ws.close()
                else:
                    await ws.send(json.dumps(gw.sent_for(frame)))

            gw.on_frame = on_frame
            # Pauses of 0.05, 0.1, 0.2, 0.4 s (at least half of each) on the first connection: the
            # next would be at least 0.8 s.
            client = make_client(gw, store, send_retry=Backoff(initial=0.05, cap=5.0))
            pending = await client.send_text(CID, "through an outage")
            await client.start()
            assert await pending.wait(TIMEOUT) == 1
            second = [at for number, at in arrivals if number == 2]
            assert len(second) == 2  # refused once more on the new connection, then stored
            assert second[1] - second[0] < 0.3  # a first pause (at most 0.05 s), not a sixth
            await client.close()

    run(scenario())


def test_a_rate_limited_client_sends_nothing_until_the_server_says_to_retry(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            arrivals = refuse_first(gw, 1, "rate_limited", {"retry_after_s": 1})
            client = make_client(gw, store, send_retry=Backoff(initial=0.05, cap=0.2))
            await client.start()
            await client.wait_connected(TIMEOUT)
            first = await client.send_text(CID, "refused once")
            await until(lambda: len(arrivals) == 1)
            second = await client.send_text(CID, "queued during the pause")
            assert await first.wait(TIMEOUT) == 1 and await second.wait(TIMEOUT) == 2
            assert len(arrivals) == 3
            assert arrivals[1] - arrivals[0] >= 0.95  # retry_after_s, for the queued message too
            await client.close()

    run(scenario())


def test_sends_are_paced_below_the_send_rate(store: MessageStore) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            arrivals = refuse_first(gw, 0, "")
            client = make_client(gw, store, send_rate=Rate(per_s=50.0, burst=5.0))
            pending = [await client.send_text(CID, f"m{i}") for i in range(40)]
            await client.start()
            for p in pending:
                await p.wait(TIMEOUT)
            # 5 at once, then 50 per second: the 40th no sooner than 35 / 50 s after the first.
            assert arrivals[-1] - arrivals[0] >= 0.65
            await client.close()

    run(scenario())


def test_the_default_pace_stays_below_the_servers_limits() -> None:
    # docs/operations.md: `send_device` 1200 per 60 s per device, `ws_frame` 6000 per 60 s per connection.
    assert SEND_RATE.most_in(60) < 1200
    assert FRAME_RATE.most_in(60) < 6000
