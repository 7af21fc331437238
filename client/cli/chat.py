"""`python -m client chat CONVERSATION` and `python -m client listen`: the live modes.

Both run a `RealtimeClient` on the device's message store (`<home>/messages.sqlite3`). `chat`
prints the conversation's incoming messages as they arrive (`[seq] alice: text`), sends every line
read from stdin, marks what it printed as read and shows receipts and typing compactly (lines
starting with `*`). Connection status goes to stderr. It ends on EOF (after the queued lines got
their seq, or a timeout: what is left stays in the outbox for next time), on `/quit` or on Ctrl-C.
`listen` prints incoming messages of every conversation until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from client import frames as fr
from client.crypto.errors import DecryptError
from client.errors import RealtimeAuthError, RealtimeNotConnectedError, SdkError, SendFailedError
from client.protocol import ApiError
from client.realtime import IncomingMessage, PendingSend, RealtimeClient
from client.session import Session
from client.store.messages import MessageStore, StoredMessage

DRAIN_TIMEOUT_S = float(os.environ.get("E2EE_CHAT_DRAIN_TIMEOUT_S", "10"))
RECENT_LINES = 20


def say(text: str) -> None:
    print(text, flush=True)


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def message_line(seq: int, username: str, text: str) -> str:
    return f"[{seq}] {username}: {text}"


def _stored_line(message: StoredMessage) -> str:
    return message_line(message.seq, message.sender_username, message.text)


def _incoming_line(message: IncomingMessage) -> str:
    line = message_line(message.seq, message.sender_username, message.text)
    if message.failure is not None and message.failure_detail:
        line += f" ({message.failure_detail})"
    for warning in message.warnings:
        line += f"\n      warning: {warning}"
    return line


class _Lines:
    """stdin lines delivered to the event loop by a daemon thread (works for ttys, pipes and
    files alike, and never keeps the process alive at exit); None marks EOF."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=pump, name="stdin", daemon=True).start()


async def _watch_connection(client: RealtimeClient) -> None:
    """Report connects and disconnects on stderr."""
    was = False
    while True:
        now = client.connected
        if now != was:
            status("* connected" if now else "* disconnected; reconnecting ...")
            was = now
        await asyncio.sleep(0.1)


async def chat(session: Session, store: MessageStore, conversation_id: uuid.UUID) -> int:
    client = RealtimeClient(session, store)
    me = session.device_id
    receipts_shown: dict[uuid.UUID, tuple[int, int]] = {}

    async def show_message(message: IncomingMessage) -> None:
        if message.conversation_id != conversation_id:
            return
        say(_incoming_line(message))
        await client.mark_read(conversation_id, message.seq)

    def show_receipt(receipt: fr.Receipt) -> None:
        if receipt.conversation_id != conversation_id:
            return
        for row in receipt.receipts:
            if row.device_id == me or receipts_shown.get(row.device_id) == (row.delivered_seq, row.read_seq):
                continue
            receipts_shown[row.device_id] = (row.delivered_seq, row.read_seq)
            say(f"* {row.username}/{str(row.device_id)[:8]} has #{row.delivered_seq}, read #{row.read_seq}")

    def show_typing(typing: fr.Typing) -> None:
        if typing.conversation_id == conversation_id and typing.device_id != me and typing.active:
            say(f"* {typing.username} is typing ...")

    def show_failure(item: tuple[PendingSend | None, SendFailedError]) -> None:
        status(f"error: a message was refused: {item[1]}")

    client.on_message(show_message)
    client.on_receipt(show_receipt)
    client.on_typing(show_typing)
    client.on_send_failed(show_failure)

    for message in store.messages(conversation_id)[-RECENT_LINES:]:
        say(_stored_line(message))
    queued = [e for e in store.outbox() if e.conversation_id == conversation_id]
    if queued:
        status(f"* {len(queued)} queued message(s) from before will be sent")

    async def announce(pending: PendingSend, text: str) -> None:
        with contextlib.suppress(SendFailedError, RealtimeNotConnectedError):
            say(message_line(await pending.wait(), session.username, text))

    async def body(lines: _Lines | None) -> None:
        assert lines is not None
        await _chat_loop(client, conversation_id, lines, announce)

    return await _run(client, body)


async def _chat_loop(
    client: RealtimeClient,
    conversation_id: uuid.UUID,
    lines: _Lines,
    announce: Callable[[PendingSend, str], Coroutine[Any, Any, None]],
) -> None:
    announcements: list[asyncio.Task[None]] = []
    while True:
        line = await lines.queue.get()
        if line is None or line.strip() == "/quit":
            break
        if not line.strip():
            continue
        try:
            pending = await client.send_text(conversation_id, line)
        except (ApiError, SdkError, DecryptError) as exc:  # not sealed, not queued: say so, go on
            status(f"error: not sent: {exc}")
            continue
        announcements.append(asyncio.ensure_future(announce(pending, line)))
    waiting = [p for p in client.pending_sends() if not p.done()]
    if waiting:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await asyncio.gather(*(p.wait() for p in waiting), return_exceptions=True)
        except TimeoutError:
            status(f"* {sum(not p.done() for p in waiting)} message(s) stay queued; they go out next time")
    for task in announcements:
        task.cancel()  # a queued line's own echo is not awaited past the drain
    await asyncio.gather(*announcements, return_exceptions=True)


async def listen(session: Session, store: MessageStore) -> int:
    client = RealtimeClient(session, store)
    client.on_message(lambda m: say(f"{str(m.conversation_id)[:8]} {_incoming_line(m)}"))

    async def forever(lines: _Lines | None) -> None:
        await asyncio.Event().wait()

    return await _run(client, forever, read_stdin=False)


async def _run(
    client: RealtimeClient,
    body: Callable[[_Lines | None], Coroutine[Any, Any, None]],
    *,
    read_stdin: bool = True,
) -> int:
    """Start the client, run `body` until it ends or the client stops for good, then close."""
    await client.start()
    watcher = asyncio.ensure_future(_watch_connection(client))
    work = asyncio.ensure_future(body(_Lines() if read_stdin else None))
    stopped = asyncio.ensure_future(client.wait_stopped())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            await stopped  # raises the RealtimeAuthError that stopped the client
        await work
    except RealtimeAuthError as exc:
        status(f"error: {exc.error_code}: {exc}")
        return 1
    finally:
        for task in (work, watcher, stopped):
            task.cancel()
        await client.close()
    return 0
