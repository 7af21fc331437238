"""Argument parsing and dispatch for `python -m client`.

Secrets live in `<home>/keystore.json`, encrypted under a passphrase (E2EE_PASSPHRASE or a prompt).
Account passwords come from E2EE_PASSWORD or a prompt; they are never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import segno

from client.cli import chat as live
from client.crypto.device_list import DeviceListError
from client.crypto.errors import DecryptError, DecryptFailure, KeystoreError
from client.crypto.fingerprint import device_fingerprint
from client.crypto.linking import LinkCodeError
from client.errors import IdentityChangedError, LinkExpiredError, SdkError, ServerUnreachableError
from client.key_requests import key_request_file, key_requests_answer_open
from client.protocol import ApiError
from client.recovery import identity_reset
from client.session import DeviceSecrets, ReceivedMessage, Session
from client.store import keystore
from client.store.messages import MessageStore
from client.transport.http import HttpTransport


def _default_home() -> Path:
    return Path(os.environ.get("E2EE_HOME") or Path.home() / ".e2ee-msg")


def _secret(env: str, prompt: str, *, confirm: bool = False) -> str:
    value = os.environ.get(env)
    if value:
        return value
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != value:
        raise SystemExit("the two entries differ")
    return value


class Context:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "keystore.json"
        self._passphrase: str | None = None

    def passphrase(self, *, new: bool = False) -> str:
        if self._passphrase is None:
            self._passphrase = _secret(
                "E2EE_PASSPHRASE", "passphrase for this device's key store: ", confirm=new and sys.stdin.isatty()
            )
        return self._passphrase

    def open(self) -> Session:
        secrets = DeviceSecrets.from_dict(keystore.load(self.path, self.passphrase()))
        return Session(secrets, HttpTransport(secrets.server_url))

    def save(self, session: Session, *, new: bool = False) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        keystore.save(self.path, self.passphrase(new=new), session.secrets.to_dict())


def _resolve_conversation(session: Session, text: str) -> uuid.UUID:
    """Accept a full conversation id or a unique prefix of one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    matches = [c.conversation_id for c in session.conversations() if str(c.conversation_id).startswith(text)]
    if len(matches) != 1:
        raise SystemExit(f"{text!r} matches {len(matches)} conversations; give more of the id")
    return matches[0]


# -- commands -------------------------------------------------------------------------------------


def cmd_register(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.path.exists():
        raise SystemExit(f"{ctx.path} already holds a device; use another --home")
    password = _secret("E2EE_PASSWORD", f"password for {args.username}: ", confirm=sys.stdin.isatty())
    session = Session.register(
        HttpTransport(args.server),
        server_url=args.server,
        username=args.username,
        password=password,
        device_name=args.device_name,
    )
    ctx.save(session, new=True)
    print(f"registered {args.username}; this device is {session.device_id} ({session.fingerprint})")
    return 0


def _show_code(code: str) -> None:
    print("On a device of yours that is already active, run:")
    print(f"  python -m client approve {code}")
    print("or scan this QR code with it:")
    qr = segno.make(code, error="m")
    qr.terminal(compact=True)


def _fetch_keys(session: Session) -> tuple[int, int]:
    """Open every ChatKey this device was given: (conversations, epochs)."""
    conversations = session.conversations()
    epochs = 0
    for conversation in conversations:
        for epoch in range(1, conversation.current_epoch + 1):
            try:
                session.chat_key(conversation, epoch)
                epochs += 1
            except DecryptError as exc:
                print(f"warning: {conversation.conversation_id} epoch {epoch}: {exc}", file=sys.stderr)
    return len(conversations), epochs


def cmd_link(ctx: Context, args: argparse.Namespace) -> int:
    """Log in as a new device, show its link code (text and QR), wait for an active device of
    the account to approve it, then open the ChatKeys it was given. Run it again in the same
    home to keep waiting (or to show a fresh code once the old one expired)."""
    if ctx.path.exists():
        session = ctx.open()
        if session.secrets.identity is not None:
            raise SystemExit(f"{ctx.path} already holds a linked device")
        if session.secrets.link_secret is None or args.new_code:
            _show_code(session.request_link())
            ctx.save(session)
    else:
        if not args.server or not args.username:
            raise SystemExit("link needs --server and --username for a new device")
        password = _secret("E2EE_PASSWORD", f"password for {args.username}: ")
        session = Session.login(
            HttpTransport(args.server),
            server_url=args.server,
            username=args.username,
            password=password,
            device_name=args.device_name,
        )
        code = session.request_link()
        ctx.save(session, new=True)
        print(f"logged in as {args.username}; this device is {session.device_id} ({session.fingerprint})")
        _show_code(code)
    deadline = time.monotonic() + args.wait_s
    try:
        while not session.complete_link():
            if time.monotonic() >= deadline:
                print("still waiting for approval; run `link` again to keep waiting")
                return 2
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    except LinkExpiredError:
        session.secrets.link_secret = None
        ctx.save(session)
        print("the link code expired; run `link --new-code` for a fresh one", file=sys.stderr)
        return 3
    ctx.save(session)
    conversations, epochs = _fetch_keys(session)
    ctx.save(session)
    print(f"linked: this device joined {session.username} and holds {epochs} ChatKeys of {conversations} conversations")
    return 0


def cmd_whoami(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    me = session.me()
    device = me["device"]
    print(f"{me['username']} on {session.secrets.server_url}")
    print(f"device {device['device_id']} ({device['name']}), {device['status']}, fingerprint {session.fingerprint}")
    ctx.save(session)
    return 0


def cmd_devices(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    for d, verified in session.devices_verified():
        mark = "*" if d.device_id == session.device_id else " "
        fp = device_fingerprint(d.x25519_public_key, d.ed25519_public_key)
        trust = "verified" if verified else "NOT ON THE SIGNED LIST"
        print(
            f"{mark} {d.device_id}  {d.status:8} {d.name!s:16} {fp}  created {d.created_at}  "
            f"last seen {d.last_seen_at or '-'}  {trust}"
        )
    ctx.save(session)
    return 0


def cmd_device_log(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    entries = session.device_log()
    names = {d.device_id: d.name for entry in entries for d in entry.devices}
    for entry in entries:
        when = datetime.fromtimestamp(entry.timestamp_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        subject = f"{names.get(entry.subject_device_id, '?')} ({entry.subject_device_id})"
        actor = f"{names.get(entry.actor_device_id, '?')} ({entry.actor_device_id})"
        if entry.change == "created":
            what = f"account created with {subject}"
        else:
            what = f"{actor} {entry.change} {subject}"
        print(f"v{entry.version:<4} {when} UTC  {what}  -> {len(entry.devices)} devices")
    print(f"signed by the account identity key; chain verified up to version {len(entries)}")
    ctx.save(session)
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    result = session.approve_link(" ".join(args.code))
    ctx.save(session)
    print(
        f"device {result.device_id} is now active: {result.wrapped_keys} ChatKeys wrapped for it "
        f"in {result.upload_requests} uploads ({result.seconds:.1f} s)"
    )
    return 0


def cmd_revoke(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    result = session.revoke_device(uuid.UUID(args.device_id))
    ctx.save(session)
    print(f"device {result.device_id} is revoked and signed out of the device list")
    print(
        f"{len(result.rotated)} conversations moved to a new epoch without it ({result.seconds:.1f} s): "
        "it cannot read what comes next"
    )
    for conversation_id, reason in result.failed.items():
        print(f"could not re-key {conversation_id} now ({reason}); its members re-key before their next message")
    return 0


def cmd_conversations(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    for c in session.conversations():
        print(
            f"{c.conversation_id}  {c.kind:6} epoch {c.current_epoch}  {c.last_seq:6} messages  {', '.join(c.members)}"
        )
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    if args.direct:
        conversation = session.create_conversation([args.direct], kind="direct")
    else:
        conversation = session.create_conversation(args.group, kind="group", share_history=not args.no_history)
    ctx.save(session)
    print(conversation.conversation_id)
    return 0


def cmd_send(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    envelope = session.send_text(_resolve_conversation(session, args.conversation), " ".join(args.text))
    ctx.save(session)
    print(f"sent as message {envelope.seq}")
    return 0


def _progress_bar(label: str) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (redrawn at most once per percent)."""
    shown = [-1]

    def draw(done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if percent == shown[0]:
            return
        shown[0] = percent
        bar = "#" * (percent // 4)
        end = "\n" if percent == 100 else ""
        print(
            f"\r{label} [{bar:<25}] {percent:3d}% {done / 1048576:.1f}/{total / 1048576:.1f} MiB",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return draw


def cmd_send_file(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    path = Path(args.path)
    if not path.is_file():
        raise SystemExit(f"{path} is not a file")
    progress = None if args.quiet else _progress_bar(f"upload {path.name}")
    envelope, info = session.send_file(
        _resolve_conversation(session, args.conversation), path, progress=progress, mime=args.mime
    )
    ctx.save(session)
    print(f"sent {info.name} ({info.size} bytes) as message {envelope.seq}")
    return 0


def cmd_save(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    conversation_id = _resolve_conversation(session, args.conversation)
    found = [r for r in session.history(conversation_id, after=args.seq - 1) if r.seq == args.seq]
    if not found:
        raise SystemExit(f"no message {args.seq} in this conversation")
    result = found[0]
    if not isinstance(result, ReceivedMessage):
        raise SystemExit(f"message {args.seq} cannot be decrypted: {result.reason.value}")
    if result.payload.get("type") != "attachment":
        raise SystemExit(f"message {args.seq} is not an attachment")
    progress = None if args.quiet else _progress_bar(f"download {result.payload.get('name', '')}")
    path = session.save_attachment(result.payload, Path(args.dir), progress=progress)
    ctx.save(session)
    print(f"saved {path}")
    return 0


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    for result in session.history(_resolve_conversation(session, args.conversation), after=args.after):
        who = f"{result.sender_username}/{str(result.sender_device_id)[:8]}"
        if isinstance(result, ReceivedMessage):
            print(f"#{result.seq:<5} {result.created_at[:19]}  {who}: {result.text}")
            for warning in result.warnings:
                print(f"       warning: {warning}")
        else:
            print(f"#{result.seq:<5} UNDECRYPTABLE from {who}: {result.reason.value} ({result.detail})")
    ctx.save(session)
    return 0


def cmd_safety_number(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    try:
        number = session.safety_number(args.username)
    except IdentityChangedError:
        # The contact reset its identity (every device lost) -- or the server claims so.
        offered = session.identity_offered(args.username)
        number = session.safety_number_offered(args.username, identity_key=offered)
        print(f"WARNING: {args.username}'s identity key CHANGED. Compare this new safety number in person:")
        print(f"  {number}")
        if not args.accept_new:
            print("Nothing is shared with the new identity until you accept it (--accept-new).")
            return 5
        session.mark_verified(args.username, identity_key=offered)
        print(f"new identity of {args.username} accepted and marked verified")
        ctx.save(session)
        return 0
    print(f"safety number with {args.username}:\n  {number}")
    if args.mark_verified:
        session.mark_verified(args.username)
        print(f"{args.username} marked verified")
    elif args.username in session.secrets.verified:
        print("(verified)")
    ctx.save(session)
    return 0


def cmd_reset_identity(ctx: Context, args: argparse.Namespace) -> int:
    """Every device lost: a new identity key and this first device (protocol.md 4.8)."""
    if ctx.path.exists():
        raise SystemExit(f"{ctx.path} already holds a device; use another --home")
    password = _secret("E2EE_PASSWORD", f"password for {args.username}: ")
    session = identity_reset(
        HttpTransport(args.server),
        server_url=args.server,
        username=args.username,
        password=password,
        device_name=args.device_name,
    )
    ctx.save(session, new=True)
    print(f"identity of {args.username} reset; every other device is revoked; this device is {session.device_id}")
    print("Contacts will see a new safety number; once they accept it, run request-keys for your history.")
    return 0


def cmd_request_keys(ctx: Context, args: argparse.Namespace) -> int:
    """File a key request (protocol.md 4.8) for every epoch this device lacks the key of."""
    session = ctx.open()
    filed = served = 0
    for conversation in session.conversations():
        for epoch in range(1, conversation.current_epoch + 1):
            try:
                session.chat_key(conversation, epoch)
                continue
            except DecryptError as exc:
                if exc.reason != DecryptFailure.MISSING_KEY:
                    continue
            info = key_request_file(session, conversation.conversation_id, epoch)
            served, filed = served + (info.status == "served"), filed + (info.status == "open")
    print(f"{filed} key requests open, {served} served already")
    ctx.save(session)
    return 0


def cmd_answer_keys(ctx: Context, args: argparse.Namespace) -> int:
    """Answer the open key requests of other devices that this device may answer."""
    session = ctx.open()
    for outcome in key_requests_answer_open(session):
        request = outcome.request
        state = "answered" if outcome.answered else f"refused: {outcome.reason}"
        print(f"{request.username}/{request.device_id} epoch {request.epoch} of {request.conversation_id}: {state}")
    ctx.save(session)
    return 0


def cmd_add_member(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    conversation = session.add_member(_resolve_conversation(session, args.conversation), args.username)
    ctx.save(session)
    shared = "with the history" if conversation.share_history else "from now on (new epoch)"
    print(f"{args.username} added {shared}; members: {', '.join(conversation.members)}")
    return 0


def cmd_remove_member(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    conversation = session.remove_member(_resolve_conversation(session, args.conversation), args.username)
    ctx.save(session)
    if conversation is None:
        print("you left the conversation")
    else:
        print(f"{args.username} removed; now at epoch {conversation.current_epoch}, which it cannot read")
    return 0


def cmd_leave(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    session.leave(_resolve_conversation(session, args.conversation))
    ctx.save(session)
    print("you left the conversation; the others start a new epoch before their next message")
    return 0


def cmd_rotate(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    epoch = session.rotate_epoch(_resolve_conversation(session, args.conversation))
    ctx.save(session)
    print(f"now at epoch {epoch}")
    return 0


def cmd_push(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    if args.webhook:
        target = session.push_target_set(kind="webhook", url=args.webhook)
        print(f"this device is woken at {target.url} when it is offline (content-free wake-ups)")
        print(f"signing secret (shown once; your relay checks X-E2EE-Signature with it): {target.secret}")
    elif args.off:
        print("push target removed" if session.push_target_delete() else "this device had no push target")
    else:
        current = session.push_target()
        print("no push target" if current is None else f"{current.kind} {current.url} (since {current.created_at})")
    ctx.save(session)
    return 0


def cmd_mute(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    session.mute(_resolve_conversation(session, args.conversation), muted=not args.off)
    ctx.save(session)
    print("muted: no wake-ups for it on this device" if not args.off else "unmuted")
    return 0


def cmd_logout(ctx: Context, args: argparse.Namespace) -> int:
    session = ctx.open()
    session.logout()
    ctx.save(session)
    print("logged out; this device's token no longer works")
    return 0


def _live(ctx: Context, run: Callable[[Session, MessageStore], Coroutine[Any, Any, int]]) -> int:
    """Run a live mode on this device's message store; Ctrl-C or SIGTERM ends it cleanly (exit 0)."""
    session = ctx.open()
    store = MessageStore.open_in(ctx.home)
    try:
        with _sigint_not_ignored(), _sigterm_as_sigint():
            return asyncio.run(run(session, store))
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()
        ctx.save(session)


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """SIGINT (Ctrl-C, `kill -INT`) is how a live mode ends, however the process was started.

    A command started in the background of a non-interactive shell (`listen &` in a script, a CI
    running jobs side by side) inherits SIGINT ignored, and `asyncio.run` takes SIGINT over only
    from Python's default handler: left ignored, the signal is dropped and the mode runs until
    killed, without closing its connection or saving the key store.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (`kill`, a service manager stopping the process) ends a live mode like Ctrl-C:
    the connection closes and the key store is saved, instead of the process dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # asyncio.run's own SIGINT handling stops the mode

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_chat(ctx: Context, args: argparse.Namespace) -> int:
    def run(session: Session, store: MessageStore) -> Coroutine[Any, Any, int]:
        conversation_id = _resolve_conversation(session, args.conversation)
        # Learn the conversation and its current ChatKey now, so lines typed while the server is
        # unreachable can still be sealed and queued.
        conversation = session.conversation(conversation_id)
        try:
            session.chat_key(conversation, conversation.current_epoch)
        except DecryptError as exc:
            print(f"warning: this device cannot write here yet: {exc}", file=sys.stderr)
        return live.chat(session, store, conversation_id)

    return _live(ctx, run)


def cmd_listen(ctx: Context, args: argparse.Namespace) -> int:
    return _live(ctx, live.listen)


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from client.demo import run_demo

    return run_demo(args.server, home=Path(args.demo_home))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description="End-to-end-encrypted messenger client.")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="folder holding this device's encrypted key store (default $E2EE_HOME or ~/.e2ee-msg)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[Context, argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add("register", cmd_register, "create an account and its first device")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--username", required=True)
    p.add_argument("--device-name", default=os.uname().nodename[:64] or "device")
    p = add("link", cmd_link, "add this machine to an account: show a link code, wait for approval, fetch keys")
    p.add_argument("--server", help="server URL, e.g. http://127.0.0.1:8000 (for a new device)")
    p.add_argument("--username", help="the account to join (for a new device)")
    p.add_argument("--device-name", default=os.uname().nodename[:64] or "device")
    p.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for approval (default 600)")
    p.add_argument("--new-code", action="store_true", help="show a fresh link code (the old one stops working)")
    add("whoami", cmd_whoami, "show this device and account")
    add("devices", cmd_devices, "list this account's devices and whether each is on the signed device list")
    add("device-log", cmd_device_log, "every change to this account's devices, from the signed device list")
    p = add("approve", cmd_approve, "approve a new device of this account with the link code it shows")
    p.add_argument("code", nargs="+", help="the link code (dashes and spaces do not matter)")
    p = add("revoke", cmd_revoke, "revoke a device of this account and sign it out of the device list")
    p.add_argument("device_id")
    add("conversations", cmd_conversations, "list conversations")
    p = add("create", cmd_create, "create a conversation")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--direct", metavar="USER")
    group.add_argument("--group", metavar="USER", nargs="+")
    p.add_argument("--no-history", action="store_true", help="members added later do not read earlier messages")
    p = add("send", cmd_send, "send an encrypted text message")
    p.add_argument("conversation", help="conversation id or a unique prefix")
    p.add_argument("text", nargs="+")
    p = add("send-file", cmd_send_file, "send a file, encrypted, as an attachment")
    p.add_argument("conversation", help="conversation id or a unique prefix")
    p.add_argument("path")
    p.add_argument("--mime", help="media type to announce (default: guessed from the name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("save", cmd_save, "download, verify and decrypt an attachment under its original name")
    p.add_argument("conversation", help="conversation id or a unique prefix")
    p.add_argument("seq", type=int, help="the attachment message's sequence number (see history)")
    p.add_argument("--dir", default=".", help="folder to save into (default: the current one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("history", cmd_history, "read and decrypt a conversation")
    p.add_argument("conversation", help="conversation id or a unique prefix")
    p.add_argument("--after", type=int, default=0, help="only messages after this sequence number")
    p = add("chat", cmd_chat, "live chat: print messages as they arrive, send the lines you type")
    p.add_argument("conversation", help="conversation id or a unique prefix")
    add("listen", cmd_listen, "print incoming messages of every conversation until interrupted")
    p = add("safety-number", cmd_safety_number, "show the safety number shared with a contact")
    p.add_argument("username")
    p.add_argument("--mark-verified", action="store_true", help="record that you compared it in person")
    p.add_argument("--accept-new", action="store_true", help="accept a changed identity key you compared in person")
    p = add("reset-identity", cmd_reset_identity, "every device lost: new identity key and first device")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--username", required=True)
    p.add_argument("--device-name", default=os.uname().nodename[:64] or "device")
    add("request-keys", cmd_request_keys, "ask other devices for the ChatKeys this device lacks")
    add("answer-keys", cmd_answer_keys, "re-wrap ChatKeys for other devices' key requests where entitled")
    p = add("add-member", cmd_add_member, "add a user to a group conversation")
    p.add_argument("conversation")
    p.add_argument("username")
    p = add("remove-member", cmd_remove_member, "remove a member of a group conversation (and re-key)")
    p.add_argument("conversation")
    p.add_argument("username")
    p = add("leave", cmd_leave, "leave a group conversation")
    p.add_argument("conversation")
    p = add("rotate", cmd_rotate, "start a new ChatKey epoch in a conversation")
    p.add_argument("conversation")
    p = add("push", cmd_push, "show, set (--webhook URL) or remove (--off) where this device is woken when offline")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--webhook", metavar="URL", help="a relay URL the server POSTs signed, content-free wake-ups to")
    group.add_argument("--off", action="store_true", help="stop waking this device")
    p = add("mute", cmd_mute, "stop waking this device for a conversation (--off to unmute)")
    p.add_argument("conversation")
    p.add_argument("--off", action="store_true", help="unmute")
    add("logout", cmd_logout, "revoke this device's token")
    p = add("demo", cmd_demo, "run the scripted end-to-end demo against a server")
    p.add_argument("--server", required=True)
    p.add_argument("--demo-home", default="var/demo", help="where the demo devices' key stores are written")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = Context(args.home or _default_home())
    try:
        return int(args.handler(ctx, args))
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.extra:
            print(f"       {exc.extra}", file=sys.stderr)
        return 1
    except ServerUnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except (SdkError, KeystoreError, LinkCodeError, DeviceListError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
