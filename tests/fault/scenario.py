"""One fault run: real SDK devices send on a seeded schedule while a seeded schedule injects faults;
then every device's store is checked against what the senders were acknowledged.

The run's verdict rests on invariants and one bound only: nothing acknowledged is lost, shown
twice, undecryptable or out of its sender's order, and every device holds everything within
`CONVERGENCE_BOUND_S` of the end of the last fault (the bound issue 13 fixes). How many messages
go out, and exactly when, varies with the machine's load; no verdict depends on it.

Convergence: sending stops when the last fault ends; the run has converged once every queued
message is acknowledged and every device of every conversation holds, decrypted, every message up
to the conversation's highest acknowledged seq. The time from the last fault's end to that moment
is the convergence time. It is measured up to `CONVERGENCE_WAIT_S`, far beyond the bound, so a run
that fails still says by how much.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

from client import protocol as proto
from client.errors import SdkError, SendFailedError
from client.realtime import IncomingMessage, PendingSend, RealtimeClient
from client.session import Session
from client.store.messages import MessageStore
from tests.fault.proxy import FailoverProxy
from tests.fault.services import Stack

DEVICES = 6  # 3 people x 2 devices; each device is in 3 conversations (see create_conversations)
CONVERGENCE_BOUND_S = 5.0
CONVERGENCE_WAIT_S = 20.0
SEND_RATE_PER_S = 20.0  # over all devices
WARMUP_S = 2.0
SEAL_RETRY_S = 0.25
PROBE_EVERY_S = 0.1
FAULT_KINDS = ("daphne_kill", "daphne_stop", "redis_kill", "postgres_restart", "proxy_drop", "proxy_stall")
EXTRA_FAULTS = 2  # drawn at random on top of one of each kind
# A burst of messages queued at once by one device as a fault starts (BURST_FAULTS): the outbox
# then holds many messages when sends fail, which is when resends can outrun the server's limits.
BURST = 60
BURST_FAULTS = frozenset({"postgres_restart", "redis_kill", "daphne_kill"})


@dataclass(frozen=True)
class Fault:
    kind: str
    gap_s: float  # quiet time before it starts
    target: int = 0  # which daphne process
    hold_s: float = 0.0  # how long a stop, a stall or a Redis outage lasts
    burster: int = 0  # which device sends a burst as it starts (BURST_FAULTS)
    burst_conversation: int = 0  # into which of its conversations


def fault_schedule(seed: int) -> list[Fault]:
    """One fault of each kind and `EXTRA_FAULTS` more, in a seeded order with seeded gaps."""
    rng = random.Random(seed)
    kinds = list(FAULT_KINDS) + [rng.choice(FAULT_KINDS) for _ in range(EXTRA_FAULTS)]
    rng.shuffle(kinds)
    return [
        Fault(
            kind=kind,
            gap_s=rng.uniform(0.5, 2.0),
            target=rng.randrange(2),
            hold_s=rng.uniform(1.0, 3.0),
            burster=rng.randrange(DEVICES),
            burst_conversation=rng.randrange(3),
        )
        for kind in kinds
    ]


@dataclass(frozen=True)
class PlannedSend:
    at_s: float
    device: int
    conversation: int


def send_schedule(seed: int, devices: int, conversations_of: list[list[int]], duration_s: float) -> list[PlannedSend]:
    """Sends at `SEND_RATE_PER_S`, each by a seeded device into one of its conversations."""
    rng = random.Random(seed ^ 0x5E4D)
    plan = []
    for index in range(int(duration_s * SEND_RATE_PER_S)):
        device = rng.randrange(devices)
        plan.append(PlannedSend(index / SEND_RATE_PER_S, device, rng.choice(conversations_of[device])))
    return plan


@dataclass
class Sent:
    device: int
    counter: int
    conversation_id: uuid.UUID
    pending: PendingSend
    queued_at: float  # wall clock
    seq: int | None = None
    refused: str | None = None


@dataclass
class FaultRecord:
    fault: Fault
    started: float  # wall clock
    ended: float


@dataclass
class RunReport:
    seed: int
    faults: list[FaultRecord] = field(default_factory=list)
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    unacknowledged: int = 0
    deliveries: int = 0
    lost: int = 0
    duplicates: int = 0
    undecryptable: int = 0
    out_of_order: int = 0  # messages placed before one their sender queued earlier (counted once)
    arrived_out_of_order: int = 0  # deliveries a device reported before an earlier seq of the same sender
    convergence_s: float | None = None
    reconnects: int = 0
    # HTTP 5xx the daphne processes logged, by window ("during <fault>", "after <fault>").
    server_errors: dict[str, int] = field(default_factory=dict)
    # WebSocket sends answered internal_error (the server failed to store them), by window.
    ws_sends_failed: dict[str, int] = field(default_factory=dict)
    # The probe's requests by window: (sent, failed with a 5xx or no answer).
    probe: dict[str, tuple[int, int]] = field(default_factory=dict)
    worker_alive: bool = True
    beat_alive: bool = True
    send_frames: int = 0  # `send` frames the servers received (resends included)
    frames_refused: int = 0  # frames refused by the per-connection frame rate limit
    rate_limited: dict[str, int] = field(default_factory=dict)  # refusals by rate limit name
    error_frames: int = 0  # `error` frames the servers sent
    notes: list[str] = field(default_factory=list)
    phases_s: dict[str, float] = field(default_factory=dict)  # where the run's time went

    def summary(self) -> str:
        converged = f"{self.convergence_s:.2f} s" if self.convergence_s is not None else f"> {CONVERGENCE_WAIT_S:.0f} s"
        kinds = ",".join(r.fault.kind for r in self.faults)
        return (
            f"fault run seed={self.seed}: {len(self.faults)} faults [{kinds}]\n"
            f"  sent {self.sent}, acknowledged {self.acknowledged}, refused {self.refused}, unacknowledged "
            f"{self.unacknowledged}; deliveries {self.deliveries}; lost {self.lost}, duplicates {self.duplicates}, "
            f"undecryptable {self.undecryptable}, out of order {self.out_of_order} (arrived out of seq order: "
            f"{self.arrived_out_of_order}); converged {converged} after the last fault\n"
            f"  after the PostgreSQL restart: {self.server_errors_after('postgres_restart')} HTTP 5xx, "
            f"{self.ws_sends_failed.get('after postgres_restart', 0)} WebSocket sends failed\n"
            f"  reconnects {self.reconnects}; worker alive {self.worker_alive}, beat alive {self.beat_alive}; "
            f"send frames {self.send_frames} for {self.sent} messages, frames refused for rate "
            f"{self.frames_refused}, error frames {self.error_frames}, rate limited by limit {self.rate_limited}\n"
            f"  HTTP 5xx logged by window: {self.server_errors}\n"
            f"  WebSocket sends failed (internal_error) by window: {self.ws_sends_failed}\n"
            f"  probe (sent, failed) by window: {self.probe}\n"
            f"  time by phase (s): {self.phases_s}"
        )

    def server_errors_after(self, kind: str) -> int:
        return self.server_errors.get(f"after {kind}", 0)

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "faults"}
        data["faults"] = [{**r.fault.__dict__, "duration_s": round(r.ended - r.started, 2)} for r in self.faults]
        return json.dumps(data)


@dataclass
class Device:
    index: int
    session: Session
    conversations: list[uuid.UUID] = field(default_factory=list)
    client: RealtimeClient | None = None
    received: list[IncomingMessage] = field(default_factory=list)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: int = 0  # messages queued so far in this run: the next one's counter

    @property
    def rt(self) -> RealtimeClient:
        assert self.client is not None
        return self.client


class Probe:
    """REST reads through the proxy at a fixed pace, a new connection each (so both backends
    answer them): what a user's app sees right after a PostgreSQL restart."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self._url = url
        self._tokens = tokens
        self.answers: list[tuple[float, int]] = []  # (wall clock sent, status; 0 = no answer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        host, port = urlsplit(self._url).hostname, urlsplit(self._url).port
        index = 0
        while not self._stop.wait(PROBE_EVERY_S):
            token = self._tokens[index % len(self._tokens)]
            index += 1
            sent = time.time()
            http = HTTPConnection(host or "127.0.0.1", port, timeout=5.0)
            try:
                http.request("GET", "/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
                status = http.getresponse().status
            except OSError:
                status = 0
            finally:
                http.close()
            self.answers.append((sent, status))


class FaultRun:
    def __init__(self, *, seed: int, stack: Stack, proxy: FailoverProxy, devices: list[Device], home: Any) -> None:
        self.seed = seed
        self.stack = stack
        self.proxy = proxy
        self.devices = devices
        self.home = home
        self.report = RunReport(seed=seed)
        self.sent: list[Sent] = []
        self.members: dict[uuid.UUID, list[int]] = {}
        self._stop_sending = asyncio.Event()
        self._acks: set[asyncio.Task[None]] = set()
        self.started = time.time()

    # -- setup -----------------------------------------------------------------------------------

    def create_conversations(self) -> None:
        """A group of all three people and a two-person group of each pair, new for this run; every
        device opens their keys and checks their epochs before the faults start."""
        by_user: dict[str, list[Device]] = {}
        for device in self.devices:
            by_user.setdefault(device.session.username, []).append(device)
        users = list(by_user)
        groups = [users, users[:2], users[1:], [users[0], users[2]]]
        for group in groups:
            creator = by_user[group[0]][0].session
            cid = creator.create_conversation(list(group[1:]), kind="group").conversation_id
            self.members[cid] = [d.index for u in group for d in by_user[u]]
            for user in group:
                for device in by_user[user]:
                    device.conversations.append(cid)
        for device in self.devices:
            for cid in device.conversations:
                conversation = device.session.conversation_for_send(cid, refresh=True)
                device.session.chat_key(conversation, conversation.current_epoch)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> RunReport:
        self.started = time.time()
        mark = time.monotonic()
        counters = self.stack.counters()
        for device in self.devices:
            home = self.home / f"seed{self.seed}-device{device.index}"
            home.mkdir(parents=True)
            client = RealtimeClient(
                device.session, MessageStore.open_in(home), jitter=random.Random(self.seed * 100 + device.index)
            )
            client.on_message(device.received.append)
            device.client = client
            await client.start()
        for device in self.devices:
            await device.rt.wait_connected(30)
        mark = self._phase("connect", mark)
        probe = Probe(self.proxy.url, [d.session.secrets.token or "" for d in self.devices])
        probe.start()
        try:
            faults = asyncio.create_task(self._inject_faults())
            senders = [asyncio.create_task(self._send_all(d)) for d in self.devices]
            await faults
            last_fault_end = mark = self._phase("faults", mark)
            self._stop_sending.set()
            await asyncio.gather(*senders)
            converged_at = await self._wait_converged(last_fault_end)
            if converged_at is not None:
                self.report.convergence_s = max(0.0, converged_at - last_fault_end)
            mark = self._phase("convergence", mark)
        finally:
            probe.stop()
            for device in self.devices:
                self.report.reconnects += max(0, device.rt.connections - 1)
                await device.rt.close()
        mark = self._phase("close", mark)
        self._check()
        self._count_server_errors(probe)
        after = self.stack.counters()

        def grown(key: str) -> int:
            return int(after.get(key, 0) - counters.get(key, 0))

        self.report.send_frames = grown("e2ee_websocket_frames_total{direction=in,type=send}")
        self.report.error_frames = grown("e2ee_websocket_frames_total{direction=out,type=error}")
        self.report.frames_refused = grown("e2ee_rate_limited_total{limit=ws_frame}")
        for key in after:
            if key.startswith("e2ee_rate_limited_total{limit=") and grown(key):
                self.report.rate_limited[key.split("=", 1)[1].rstrip("}")] = grown(key)
        self.report.worker_alive = self.stack.worker is not None and self.stack.worker.alive()
        self.report.beat_alive = self.stack.beat is not None and self.stack.beat.alive()
        for device in self.devices:
            device.rt.store.close()
        self._phase("checks", mark)
        return self.report

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.report.phases_s[name] = round(now - since, 1)
        return now

    async def _send_all(self, device: Device) -> None:
        start = time.monotonic()
        duration = 120.0  # far more than the faults take: sending stops when they end
        conversations_of = [d.conversations for d in self.devices]
        indexes = [list(range(len(c))) for c in conversations_of]
        plan = [p for p in send_schedule(self.seed, len(self.devices), indexes, duration) if p.device == device.index]
        for planned in plan:
            delay = start + planned.at_s - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop_sending.wait(), timeout=delay)
                except TimeoutError:
                    pass
            if self._stop_sending.is_set():
                return
            await self._send_one(device, device.conversations[planned.conversation])

    async def _burst(self, device: Device, conversation: int) -> None:
        """`BURST` messages queued at once, as a person pasting or an app flushing its queue does."""
        for _ in range(BURST):
            await self._send_one(device, device.conversations[conversation])

    async def _send_one(self, device: Device, cid: uuid.UUID) -> None:
        async with device.sending:  # one message at a time per device: its counter is its order
            counter = device.queued
            device.queued += 1
            text = json.dumps({"run": self.seed, "device": device.index, "counter": counter})
            while True:
                try:
                    pending = await device.rt.send_text(cid, text)
                    break
                except (proto.ApiError, SdkError):  # sealing needed the server and it failed: retry
                    await asyncio.sleep(SEAL_RETRY_S)
            sent = Sent(device.index, counter, cid, pending, queued_at=time.time())
            self.sent.append(sent)
            self._acks.add(asyncio.create_task(self._await_ack(sent)))

    async def _await_ack(self, sent: Sent) -> None:
        try:
            sent.seq = await sent.pending.wait()
        except SendFailedError as exc:
            sent.refused = exc.code
        except SdkError:
            pass  # the client closed: it stays unacknowledged

    async def _inject_faults(self) -> None:
        await asyncio.sleep(WARMUP_S)
        actions: dict[str, Callable[[Fault], Any]] = {
            "daphne_kill": lambda f: asyncio.to_thread(self.stack.daphne_kill_and_restart, f.target),
            "daphne_stop": self._daphne_stop,
            "redis_kill": self._redis_kill,
            "postgres_restart": lambda f: asyncio.to_thread(self.stack.postgres_restart),
            "proxy_drop": lambda f: asyncio.to_thread(self.proxy.drop),
            "proxy_stall": self._proxy_stall,
        }
        bursts: list[asyncio.Task[None]] = []
        for fault in fault_schedule(self.seed):
            await asyncio.sleep(fault.gap_s)
            started = time.time()
            if fault.kind in BURST_FAULTS:
                bursts.append(asyncio.create_task(self._burst(self.devices[fault.burster], fault.burst_conversation)))
            await actions[fault.kind](fault)
            self.report.faults.append(FaultRecord(fault, started, time.time()))
        await asyncio.gather(*bursts)

    async def _daphne_stop(self, fault: Fault) -> None:
        self.stack.daphne_pause(fault.target)
        try:
            await asyncio.sleep(fault.hold_s)
        finally:
            self.stack.daphne_resume(fault.target)

    async def _redis_kill(self, fault: Fault) -> None:
        """Down for `hold_s`, as a crashed Redis is until its supervisor starts it again."""
        self.stack.redis_kill()
        try:
            await asyncio.sleep(fault.hold_s)
        finally:
            await asyncio.to_thread(self.stack.redis_restart)

    async def _proxy_stall(self, fault: Fault) -> None:
        self.proxy.stall_begin()
        try:
            await asyncio.sleep(fault.hold_s)
        finally:
            self.proxy.stall_end()

    # -- convergence and the checks --------------------------------------------------------------

    def _acknowledged_top(self) -> dict[uuid.UUID, int]:
        top: dict[uuid.UUID, int] = {}
        for sent in self.sent:
            if sent.seq is not None:
                top[sent.conversation_id] = max(top.get(sent.conversation_id, 0), sent.seq)
        return top

    def _waiting_for(self, device: Device, top: dict[uuid.UUID, int]) -> str | None:
        """What `device` still lacks (its own unacknowledged sends, or messages of others), or None."""
        unacknowledged = sum(1 for s in self.sent if s.device == device.index and s.seq is None and s.refused is None)
        if unacknowledged:
            return f"{unacknowledged} of its sends unacknowledged"
        for cid in device.conversations:
            holds = device.rt.store.contiguous_seq(cid)
            if holds < top.get(cid, 0):
                return f"holds {holds} of {top[cid]} in {str(cid)[:8]}"
            if any(m.failure is not None for m in device.rt.store.messages(cid)):
                return f"undecrypted messages in {str(cid)[:8]}"  # still waiting for a key, say
        return None

    async def _wait_converged(self, since: float) -> float | None:
        """When every device lacks nothing; None if that takes beyond `CONVERGENCE_WAIT_S`.
        Notes, per device, when it last stopped lacking anything and what it lacked until then."""
        done: dict[int, float] = {}
        lacking: dict[int, str] = {}
        connections = {d.index: d.rt.connections for d in self.devices}
        converged_at: float | None = None
        while time.monotonic() < since + CONVERGENCE_WAIT_S:
            top = self._acknowledged_top()
            now = time.monotonic()
            for device in self.devices:
                waiting = self._waiting_for(device, top)
                if waiting is None:
                    done.setdefault(device.index, now)
                else:
                    done.pop(device.index, None)
                    lacking[device.index] = waiting
            if len(done) == len(self.devices):
                converged_at = now
                break
            await asyncio.sleep(0.1)
        for device in self.devices:
            at = done.get(device.index)
            when = f"{at - since:.2f} s" if at is not None else "never"
            self.report.notes.append(
                f"device {device.index} converged after {when}, lacking until then: "
                f"{lacking.get(device.index, 'nothing')}; reconnects after the last fault: "
                f"{device.rt.connections - connections[device.index]}, connected: {device.rt.connected}"
            )
        return converged_at

    def _check(self) -> None:
        report = self.report
        report.sent = len(self.sent)
        report.acknowledged = sum(1 for s in self.sent if s.seq is not None)
        report.refused = sum(1 for s in self.sent if s.refused is not None)
        report.unacknowledged = report.sent - report.acknowledged - report.refused
        for sent in self.sent:
            if sent.refused is not None:
                report.notes.append(f"device {sent.device} message {sent.counter} refused: {sent.refused}")
        stored = {
            (d.index, cid): {m.seq: m for m in d.rt.store.messages(cid)}
            for d in self.devices
            for cid in d.conversations
        }
        # Lost: an acknowledged message some other device of the conversation does not hold as sent.
        for sent in self.sent:
            if sent.seq is None:
                continue
            for index in self.members[sent.conversation_id]:
                if index == sent.device:
                    continue
                message = stored[(index, sent.conversation_id)].get(sent.seq)
                if message is None or message.client_message_id != sent.pending.client_message_id:
                    report.lost += 1
                else:
                    report.deliveries += 1
        # Undecryptable: anything a device holds without its content.
        for by_seq in stored.values():
            report.undecryptable += sum(1 for m in by_seq.values() if m.failure is not None or m.payload is None)
        # Out of order: a message placed (seq) before one its sender queued earlier in the same
        # conversation. Every device shows the conversation in seq order (each holds every seq
        # with the message acknowledged for it, checked above), so each such message is out of
        # order on every screen; it is counted once.
        by_sender: dict[tuple[int, uuid.UUID], list[Sent]] = {}
        for sent in self.sent:
            if sent.seq is not None:
                by_sender.setdefault((sent.device, sent.conversation_id), []).append(sent)
        for (sender, cid), sends in by_sender.items():
            highest: Sent | None = None
            for sent in sorted(sends, key=lambda s: s.counter):
                assert sent.seq is not None
                if highest is not None and highest.seq is not None and sent.seq < highest.seq:
                    report.out_of_order += 1
                    report.notes.append(
                        f"device {sender} conversation {str(cid)[:8]}: message {sent.counter} (queued "
                        f"{self._window(sent.queued_at)}) got seq {sent.seq}, after message {highest.counter} "
                        f"(seq {highest.seq}, queued {self._window(highest.queued_at)})"
                    )
                if highest is None or (highest.seq or 0) < sent.seq:
                    highest = sent
        # Arrival order (not asserted: the conversation is shown in seq order whatever the arrival
        # order): a device told of a message before an earlier one of the same sender.
        for device in self.devices:
            latest: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
            for incoming in device.received:
                pair = (incoming.conversation_id, incoming.sender_device_id)
                if incoming.seq < latest.get(pair, 0):
                    report.arrived_out_of_order += 1
                latest[pair] = max(latest.get(pair, 0), incoming.seq)
        # Duplicates the person would see: one message shown twice (the same position reported
        # twice with content, or the same sent message stored at two positions).
        for device in self.devices:
            shown: dict[tuple[uuid.UUID, int], int] = {}
            positions: dict[tuple[uuid.UUID, str], set[int]] = {}
            for incoming in device.received:
                if incoming.payload is None:
                    continue
                key = (incoming.conversation_id, incoming.seq)
                shown[key] = shown.get(key, 0) + 1
                body = str(incoming.payload.get("body", ""))
                positions.setdefault((incoming.conversation_id, body), set()).add(incoming.seq)
            report.duplicates += sum(n - 1 for n in shown.values())
            report.duplicates += sum(len(seqs) - 1 for seqs in positions.values())

    def _window(self, at: float) -> str:
        """The fault in progress at wall-clock `at`, or else the last one that ended before it."""
        label = "before the faults"
        for record in self.report.faults:
            if record.started <= at <= record.ended:
                return f"during {record.fault.kind}"
            if record.ended < at:
                label = f"after {record.fault.kind}"
        return label

    def _count_server_errors(self, probe: Probe) -> None:
        """Each 5xx goes to the fault in progress when it was answered, or else to the last fault
        that ended before it: "after postgres_restart" is what a user sees once PostgreSQL is back."""
        window = self._window
        for at, kind, count in self.stack.server_errors():
            if at < self.started:
                continue
            into = self.report.server_errors if kind == "http_5xx" else self.report.ws_sends_failed
            into[window(at)] = into.get(window(at), 0) + count
        for at, status in probe.answers:
            key = window(at)
            total, failed = self.report.probe.get(key, (0, 0))
            self.report.probe[key] = (total + 1, failed + (1 if status >= 500 or status == 0 else 0))
