"""The SDK's realtime client and the CLI's live chat against real daphne processes (§6).

Devices register over HTTP against the same daphne that serves the WebSocket. Every wait is a
condition with a timeout, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from client.cli.main import main as cli_main
from client.errors import RealtimeAuthError
from client.frames import (
    Fetched,
    MessageFrame,
    Pong,
    Presence,
    Receipt,
    Typing,
    ack_frame,
    fetch_frame,
    ping_frame,
    presence_query_frame,
)
from client.realtime import Backoff, IncomingMessage, RealtimeClient
from client.session import ReceivedMessage, Session
from client.store.messages import MessageStore
from client.transport.http import HttpTransport
from client.transport.websocket import connect
from harness.polling import wait_until
from harness.server import DaphneServer
from tests.integration.conftest import PASSWORD, restart

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

T = TypeVar("T")
TIMEOUT = 20.0
FAST = Backoff(initial=0.05, cap=0.5)
REPO = Path(__file__).resolve().parents[2]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


until = partial(wait_until, timeout=TIMEOUT)


@pytest.fixture
def rt_register(sessions: Callable[..., Session]) -> Callable[[str], Session]:
    """Like the `register` fixture, against the daphne process (HTTP and WebSocket on one port)."""
    return lambda username: sessions(username, "d")


def client_for(session: Session, home: Path, **kwargs: Any) -> RealtimeClient:
    home.mkdir(parents=True, exist_ok=True)
    return RealtimeClient(session, MessageStore.open_in(home), backoff=FAST, **kwargs)


async def stop(*clients: RealtimeClient) -> None:
    for client in clients:
        await client.close()
        client.store.close()


def test_two_devices_exchange_messages_receipts_and_typing_live(
    rt_register: Callable[[str], Session], names: Callable[[str], str], tmp_path: Path
) -> None:
    alice, bob = rt_register(names("alice")), rt_register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id

    async def scenario() -> None:
        a, b = client_for(alice, tmp_path / "a"), client_for(bob, tmp_path / "b")
        a_got: list[IncomingMessage] = []
        b_got: list[IncomingMessage] = []
        a_receipts: list[Receipt] = []
        b_typing: list[Typing] = []
        a.on_message(a_got.append)
        b.on_message(b_got.append)
        a.on_receipt(a_receipts.append)
        b.on_typing(b_typing.append)
        await a.start()
        await b.start()
        await a.wait_connected(TIMEOUT)
        await b.wait_connected(TIMEOUT)

        assert await a.presence([bob.username]) == {bob.username: True}
        assert await a.typing(cid, True)
        await until(lambda: any(t.active and t.username == alice.username for t in b_typing))

        seq = await (await a.send_text(cid, "hello bob")).wait(TIMEOUT)
        await until(lambda: len(b_got) == 1)
        assert (b_got[0].seq, b_got[0].sender_username, b_got[0].text) == (seq, alice.username, "hello bob")

        reply = await (await b.send_text(cid, "hi alice")).wait(TIMEOUT)
        await until(lambda: len(a_got) == 1)
        assert (a_got[0].seq, a_got[0].sender_username, a_got[0].text) == (reply, bob.username, "hi alice")

        await b.mark_read(cid, reply)

        def bob_read_everything() -> bool:
            rows = [r for rec in a_receipts for r in rec.receipts if r.device_id == bob.device_id]
            return any(r.delivered_seq >= reply and r.read_seq >= reply for r in rows)

        await until(bob_read_everything)
        # Both stores hold the whole conversation, the own messages included.
        for client in (a, b):
            assert [(m.seq, m.text) for m in client.store.messages(cid)] == [(seq, "hello bob"), (reply, "hi alice")]
            assert client.store.contiguous_seq(cid) == reply
        await stop(a, b)

    run(scenario())


def test_an_offline_device_gets_what_it_missed_in_order_on_connect(
    rt_register: Callable[[str], Session], names: Callable[[str], str], tmp_path: Path
) -> None:
    alice, bob = rt_register(names("alice")), rt_register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id
    for i in range(12):
        alice.send_text(cid, f"while you were away {i}")

    async def scenario() -> None:
        a = client_for(alice, tmp_path / "a")
        receipts: list[Receipt] = []
        a.on_receipt(receipts.append)
        await a.start()
        await a.wait_connected(TIMEOUT)

        b = client_for(bob, tmp_path / "b")
        got: list[IncomingMessage] = []
        b.on_message(got.append)
        await b.start()
        await b.wait_caught_up(TIMEOUT)
        await until(lambda: len(got) == 12)
        assert [m.seq for m in got] == list(range(1, 13))
        assert [m.text for m in got] == [f"while you were away {i}" for i in range(12)]
        # Bob's cumulative ack reached the server: alice is told everything was delivered.
        await until(
            lambda: any(r.device_id == bob.device_id and r.delivered_seq == 12 for x in receipts for r in x.receipts)
        )
        await stop(b)

        # The same device started again shows nothing twice.
        again = client_for(restart(bob), tmp_path / "b")
        repeated: list[IncomingMessage] = []
        again.on_message(repeated.append)
        await again.start()
        await again.wait_connected(TIMEOUT)
        await again.ping()  # answered after the catch-up the server does on hello (there is none)
        assert repeated == []
        assert again.store.contiguous_seq(cid) == 12
        await stop(again, a)

    run(scenario())


def test_the_outbox_outlives_a_restart_and_is_delivered_once_in_order(
    daphne_factory: Callable[..., DaphneServer], names: Callable[[str], str], tmp_path: Path
) -> None:
    server = daphne_factory()
    alice = Session.register(
        HttpTransport(server.url), server_url=server.url, username=names("alice"), password=PASSWORD, device_name="d"
    )
    bob = Session.register(
        HttpTransport(server.url), server_url=server.url, username=names("bob"), password=PASSWORD, device_name="d"
    )
    cid = alice.create_conversation([bob.username]).conversation_id
    texts = [f"queued while offline {i}" for i in range(4)]
    home = tmp_path / "alice"

    async def offline() -> None:
        a = client_for(alice, home)
        await a.start()
        for text in texts:
            await a.send_text(cid, text)  # encrypted with the ChatKey in memory, queued, not sent
        assert not a.connected and len(a.store.outbox()) == 4
        await stop(a)

    server.stop()
    run(offline())
    for path in home.iterdir():  # the outbox on disk (and its WAL) holds ciphertext only
        assert not any(text.encode() in path.read_bytes() for text in texts), path

    server.start()

    async def online_again() -> None:
        a = client_for(restart(alice), home)  # a fresh process: no ChatKey in memory, same store
        assert len(a.store.outbox()) == 4
        await a.start()
        await until(lambda: a.store.outbox() == [])
        assert [m.text for m in a.store.messages(cid)] == texts
        await stop(a)

    run(online_again())
    history = bob.history(cid)
    assert [m.text for m in history if isinstance(m, ReceivedMessage)] == texts
    assert [m.seq for m in history] == [1, 2, 3, 4]


def test_clients_reconnect_by_themselves_after_the_server_crashes(
    daphne_factory: Callable[..., DaphneServer], names: Callable[[str], str], tmp_path: Path
) -> None:
    server = daphne_factory()

    def register(name: str) -> Session:
        return Session.register(
            HttpTransport(server.url), server_url=server.url, username=name, password=PASSWORD, device_name="d"
        )

    alice, bob = register(names("alice")), register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id

    async def scenario() -> None:
        a, b = client_for(alice, tmp_path / "a"), client_for(bob, tmp_path / "b")
        got: list[IncomingMessage] = []
        b.on_message(got.append)
        for client in (a, b):
            await client.start()
            await client.wait_connected(TIMEOUT)
        assert await (await a.send_text(cid, "before the crash")).wait(TIMEOUT) == 1
        await until(lambda: len(got) == 1)

        await asyncio.to_thread(server.kill)  # no close frames: the sockets just drop
        await until(lambda: not a.connected and not b.connected)
        queued = await a.send_text(cid, "typed while the server was down")
        await asyncio.to_thread(server.start)

        assert await queued.wait(TIMEOUT) == 2
        await until(lambda: len(got) == 2)
        assert [m.text for m in got] == ["before the crash", "typed while the server was down"]
        assert a.connections == 2 and b.connections == 2
        await stop(a, b)

    run(scenario())


def test_a_repushed_message_is_stored_and_shown_once(
    daphne_factory: Callable[..., DaphneServer], names: Callable[[str], str], tmp_path: Path
) -> None:
    server = daphne_factory(extra_env={"E2EE_WS_RETRY_S": "0.5"})

    def register(name: str) -> Session:
        return Session.register(
            HttpTransport(server.url), server_url=server.url, username=name, password=PASSWORD, device_name="d"
        )

    alice, bob = register(names("alice")), register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id

    async def scenario() -> None:
        b = client_for(bob, tmp_path / "b")
        got: list[IncomingMessage] = []
        b.on_message(got.append)
        acks: list[int] = []
        real_ack = b._ack

        async def ack_lost_the_first_time(conn: Any, conversation_id: uuid.UUID, **kwargs: Any) -> None:
            acks.append(b.store.contiguous_seq(conversation_id))
            if len(acks) > 1:
                await real_ack(conn, conversation_id, **kwargs)

        b._ack = ack_lost_the_first_time  # type: ignore[method-assign]
        await b.start()
        await b.wait_connected(TIMEOUT)
        await asyncio.to_thread(alice.send_text, cid, "only once")
        await until(lambda: len(acks) >= 2)  # the server pushed it again after the retry interval
        assert [m.text for m in got] == ["only once"]
        assert len(b.store.messages(cid)) == 1
        await stop(b)

    run(scenario())


def test_a_message_is_acknowledged_only_once_it_is_stored(
    rt_register: Callable[[str], Session], names: Callable[[str], str], tmp_path: Path
) -> None:
    alice, bob = rt_register(names("alice")), rt_register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id

    class DiskFull(Exception):
        pass

    async def scenario() -> None:
        crashing = client_for(bob, tmp_path / "crash")

        def fail(**kwargs: Any) -> tuple[bool, int]:
            raise DiskFull

        crashing.store.store_message = fail  # type: ignore[method-assign]
        await crashing.start()
        await crashing.wait_connected(TIMEOUT)
        await asyncio.to_thread(alice.send_text, cid, "do not lose me")
        with pytest.raises(DiskFull):
            await crashing.wait_stopped()  # the client died while storing: nothing was acknowledged
        await stop(crashing)

        recovered = client_for(restart(bob), tmp_path / "recovered")
        got: list[IncomingMessage] = []
        recovered.on_message(got.append)
        await recovered.start()
        await until(lambda: len(got) == 1)
        assert (got[0].seq, got[0].text) == (1, "do not lose me")
        await stop(recovered)

    run(scenario())


def test_a_logged_out_device_is_refused_and_not_retried(
    rt_register: Callable[[str], Session], names: Callable[[str], str], tmp_path: Path
) -> None:
    bob = rt_register(names("bob"))
    token = bob.secrets.token
    bob.logout()
    bob.secrets.token = token  # the revoked token, as a stale device would still hold it

    async def scenario() -> None:
        b = client_for(bob, tmp_path / "b")
        await b.start()
        with pytest.raises(RealtimeAuthError) as caught:
            await b.wait_connected(TIMEOUT)
        assert caught.value.close_code == 4401
        assert b.connections == 0
        await stop(b)

    run(scenario())


def test_a_message_queued_before_an_epoch_rotation_is_sealed_again_and_delivered(
    rt_register: Callable[[str], Session], names: Callable[[str], str], tmp_path: Path
) -> None:
    alice, bob = rt_register(names("alice")), rt_register(names("bob"))
    cid = alice.create_conversation([bob.username]).conversation_id
    assert bob.rotate_epoch(cid) == 2  # alice's session still believes the conversation is at epoch 1

    async def scenario() -> None:
        a = client_for(alice, tmp_path / "a")
        await a.start()
        await a.wait_connected(TIMEOUT)
        seq = await (await a.send_text(cid, "sealed twice")).wait(TIMEOUT)
        assert seq == 1 and a.store.outbox() == []
        await stop(a)

    run(scenario())
    [received] = bob.history(cid)
    assert isinstance(received, ReceivedMessage)
    assert (received.epoch, received.text) == (2, "sealed twice")


def test_fetch_presence_and_ping_answer_as_the_document_says(
    rt_register: Callable[[str], Session], names: Callable[[str], str]
) -> None:
    alice, bob = rt_register(names("alice")), rt_register(names("bob"))
    stranger = rt_register(names("carol"))
    cid = alice.create_conversation([bob.username]).conversation_id
    for i in range(5):
        alice.send_text(cid, f"m{i}")
    token = bob.secrets.token
    assert token is not None

    async def scenario() -> None:
        conn = await connect(bob.secrets.server_url, token)
        assert conn.welcome.username == bob.username and conn.welcome.device_id == bob.device_id
        frames = conn.frames()

        async def next_of(kind: type[T]) -> T:
            async with asyncio.timeout(TIMEOUT):
                async for frame in frames:
                    if isinstance(frame, kind):
                        return frame
            raise AssertionError("the connection ended")

        # Catch-up pushes 1..5; acknowledge them so that only the fetch answers below.
        pushed = [await next_of(MessageFrame) for _ in range(5)]
        assert [m.envelope.seq for m in pushed] == [1, 2, 3, 4, 5]
        await conn.send(ack_frame(cid, 5))
        await conn.send(fetch_frame(frame_id="f1", conversation_id=cid, after=1, limit=3))
        fetched = [await next_of(MessageFrame) for _ in range(3)]
        assert [m.envelope.seq for m in fetched] == [2, 3, 4]
        done = await next_of(Fetched)
        assert (done.id, done.conversation_id, done.next_after, done.has_more) == ("f1", cid, 4, True)

        await conn.send(presence_query_frame(frame_id="p1", usernames=[alice.username, stranger.username]))
        presence = await next_of(Presence)
        # alice is not connected; carol shares no conversation with bob: both read as offline.
        assert presence == Presence({alice.username: False, stranger.username: False}, "p1")
        await conn.send(ping_frame("q1"))
        assert await next_of(Pong) == Pong("q1")
        await conn.close()

    run(scenario())


def test_a_pending_device_is_refused_as_not_active(
    rt_register: Callable[[str], Session], names: Callable[[str], str], daphne_url: str, tmp_path: Path
) -> None:
    bob = rt_register(names("bob"))
    pending = Session.login(
        HttpTransport(daphne_url), server_url=daphne_url, username=bob.username, password=PASSWORD, device_name="new"
    )

    async def scenario() -> None:
        p = client_for(pending, tmp_path / "p")
        await p.start()
        with pytest.raises(RealtimeAuthError) as caught:
            await p.wait_connected(TIMEOUT)
        assert (caught.value.close_code, caught.value.error_code) == (4403, "device_not_active")
        await stop(p)

    run(scenario())


class ChatProcess:
    """`python -m client chat` (or another live command) in a subprocess, its output lines
    collected by threads."""

    def __init__(self, home: Path, *command: str, sigint_ignored: bool = False) -> None:
        env = {**os.environ, "E2EE_PASSPHRASE": "chat passphrase", "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "client", "--home", str(home), *command]
        if sigint_ignored:
            # As a background job of a non-interactive shell is started: SIGINT ignored on entry.
            argv = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', *argv]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines), daemon=True).start()
        self.err_lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.err_lines), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, into: queue.Queue[str]) -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    def expect(self, predicate: Callable[[str], bool], stream: str = "out", timeout: float = TIMEOUT) -> str:
        source, seen = (self.lines, self.seen) if stream == "out" else (self.err_lines, self.errors)
        for line in seen:
            if predicate(line):
                return line
        try:
            while True:
                line = source.get(timeout=timeout)
                seen.append(line)
                if predicate(line):
                    return line
        except queue.Empty:
            raise AssertionError(f"no matching line within {timeout} s; got {seen}") from None

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def end(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()  # EOF
        return self.process.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)


def test_cli_live_chat_end_to_end(
    daphne_url: str,
    names: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("E2EE_PASSWORD", PASSWORD)
    monkeypatch.setenv("E2EE_PASSPHRASE", "chat passphrase")
    alice, bob = names("alice"), names("bob")
    a_home, b_home = tmp_path / "alice", tmp_path / "bob"
    assert cli_main(["--home", str(a_home), "register", "--server", daphne_url, "--username", alice]) == 0
    assert cli_main(["--home", str(b_home), "register", "--server", daphne_url, "--username", bob]) == 0
    capsys.readouterr()
    assert cli_main(["--home", str(a_home), "create", "--direct", bob]) == 0
    conversation = capsys.readouterr().out.strip()

    a_chat, b_chat = ChatProcess(a_home, "chat", conversation[:8]), ChatProcess(b_home, "chat", conversation)
    try:
        a_chat.expect(lambda line: line == "* connected", stream="err")
        b_chat.expect(lambda line: line == "* connected", stream="err")
        a_chat.say("hello bob")
        b_chat.expect(lambda line: line == f"[1] {alice}: hello bob")
        a_chat.expect(lambda line: line == f"[1] {alice}: hello bob")  # its own line, once sent
        b_chat.say("hi alice, live")
        a_chat.expect(lambda line: line == f"[2] {bob}: hi alice, live")
        # Bob's chat marked what it printed as read: alice sees the receipt.
        a_chat.expect(lambda line: line.startswith(f"* {bob}/") and line.endswith("read #1"))
        assert a_chat.end() == 0
        assert b_chat.end() == 0
    finally:
        a_chat.kill()
        b_chat.kill()

    # The CLI's history (REST) agrees with what the live mode showed.
    assert cli_main(["--home", str(b_home), "history", conversation]) == 0
    out = capsys.readouterr().out
    assert "hello bob" in out and "hi alice, live" in out
    # bob's store kept the conversation: `listen` shows only what is new, and Ctrl-C ends it cleanly,
    # even started as a background job is (SIGINT ignored on entry, as under `.ci/run`).
    listener = ChatProcess(b_home, "listen", sigint_ignored=True)
    try:
        listener.expect(lambda line: line == "* connected", stream="err")
        assert cli_main(["--home", str(a_home), "send", conversation, "are you listening?"]) == 0
        line = listener.expect(lambda line: "are you listening?" in line)
        assert line == f"{conversation[:8]} [3] {alice}: are you listening?"
        assert not any("hello bob" in seen for seen in listener.seen)
        listener.process.send_signal(signal.SIGINT)
        assert listener.process.wait(timeout=TIMEOUT) == 0
        assert not any("Traceback" in err for err in listener.errors + list(listener.err_lines.queue))
    finally:
        listener.kill()

    # A service manager stops it with SIGTERM: the same clean end.
    listener = ChatProcess(b_home, "listen")
    try:
        listener.expect(lambda line: line == "* connected", stream="err")
        listener.process.send_signal(signal.SIGTERM)
        assert listener.process.wait(timeout=TIMEOUT) == 0
        assert not any("Traceback" in err for err in listener.errors + list(listener.err_lines.queue))
    finally:
        listener.kill()
