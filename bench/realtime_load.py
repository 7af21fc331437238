"""Realtime delivery under load: throughput, send->decrypted latency, server CPU, idle memory.

    python -m bench.realtime_load --database-url postgresql://user@host:port/name --redis-url redis://host:port/0 \\
        [--devices 200 --conversations 200 --rate 200,1000 --duration 20 --warmup 5 --runs 3] \\
        [--server-processes 2 --workers 2] [--idle 1000,5000] [--profile DIR] [--json PATH] [--quick]

The production setup, end to end and all on this machine: K daphne processes serving the project
(`bench.realtime_settings`: the production settings with a fast password hasher, for provisioning),
sharing one Redis channel layer and a PostgreSQL database of the benchmark's own (`<name>_rtbench`,
dropped and re-created, dropped again at the end). Users with two devices each are registered
through the SDK over HTTP, paired into direct conversations (4 devices: a sender and 3 recipients),
and every device opens its own wrapped ChatKeys. Load-generator processes (`--workers`) each hold
many `harness.wsclient.RealtimeDevice`s, one WebSocket per device, device i on server process i mod K.

Load mode, per offered rate and run: the workers together send `rate` messages/s (real AES-GCM +
Ed25519 envelopes, `send` frames) for `warmup + duration` seconds, from random devices to random
conversations of theirs; every recipient verifies, decrypts, de-duplicates and acknowledges. Measured
over the `duration` window after the warm-up: sends acknowledged (`sent` frame) per second,
(message, recipient) decryptions per second, latency from the send frame's first write to the
decryption at each recipient (p50/p95/p99), and CPU seconds per 1,000 acknowledged messages of the
daphne processes, the local PostgreSQL (postmaster and backends), the local Redis and the load
generators, read from /proc. After the window the workers wait until every acknowledged message has
reached every recipient; what never arrives is reported as lost.

Idle mode (`--idle 1000,5000`): N authenticated connections that do nothing, opened in steps; the
daphne processes' RSS growth per connection at each step. The benchmark raises its own soft
RLIMIT_NOFILE to the hard limit before starting the servers (they inherit it); `ulimit -Hn` must
allow N plus a margin on the client side and N / K on each server process.

`--profile DIR` records the daphne processes with py-spy (if installed) during the first run of the
highest rate and reports where their time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.database import (
    NotPostgresError,
    database_drop,
    database_name,
    database_recreate,
    postgres_describe,
    redact,
    require_postgres,
    with_database_name,
)
from bench.machine import machine_describe, process_cpu_seconds, process_rss_mib, process_tree_cpu_seconds
from harness.metrics import percentile
from harness.polling import holds_within_async
from harness.provision import DeviceProfile, population_create, user_register
from harness.redis_server import redis_local_pid
from harness.server import REPO, DaphneServer
from harness.wsclient import SUBPROTOCOL, DeviceStats, RealtimeDevice, ws_url

log = logging.getLogger("bench.realtime")

SETTINGS_MODULE = "bench.realtime_settings"
# An ordinary short text: two 64-byte padding blocks once in its JSON payload.
MESSAGE_TEXT = "realtime benchmark message {n}: the quick brown fox jumps over the lazy dog"
SEND_TICK_S = 0.005
MAX_BACKLOG_S = 2.0  # seconds' worth of offered sends a worker lets wait unanswered


# --------------------------------------------------------------------------------------------
# Load-generator worker (a separate process)


@dataclass
class WorkerPlan:
    index: int
    profiles: list[dict[str, Any]]
    urls: list[str]  # one per profile
    seed: int


def _worker_main(plan: WorkerPlan, commands: mp.Queue[Any], results: mp.Queue[Any]) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_worker(plan, commands, results))
    except Exception as exc:
        results.put(("failed", plan.index, repr(exc)))
        raise


async def _worker(plan: WorkerPlan, commands: mp.Queue[Any], results: mp.Queue[Any]) -> None:
    devices = [
        RealtimeDevice(
            DeviceProfile.from_dict(p),
            [url],
            rng=random.Random(plan.seed + i),
            keep_bodies=False,
            max_in_flight=1000,
            resend_after_s=60,  # past saturation `sent` takes seconds: do not add load by resending
        )
        for i, (p, url) in enumerate(zip(plan.profiles, plan.urls, strict=True))
    ]
    for device in devices:
        device.start()
    await holds_within_async(lambda: all(d.connected.is_set() for d in devices), timeout=120)
    results.put(("ready", plan.index, os.getpid()))
    rng = random.Random(plan.seed)
    pairs = [(d, cid) for d in devices for cid in sorted(d.profile.conversations)]
    counter = 0
    while True:
        command = await asyncio.to_thread(commands.get)
        if command[0] == "stop":
            break
        _, start_ns, seconds, rate = command
        # Offer `rate` messages/s from `start_ns` for `seconds`, evenly.
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        offered = shed = 0
        end_ns = start_ns + int(seconds * 1e9)
        # Past saturation an open-loop generator would queue without bound (and drain for minutes
        # afterwards): beyond `backlog` unanswered sends in this worker, new ones are shed, counted.
        backlog = max(200, int(rate * MAX_BACKLOG_S))
        while (now := time.monotonic_ns()) < end_ns:
            due = int((now - start_ns) / 1e9 * rate) - offered
            outstanding = sum(len(d.outbox) for d in devices)
            for _ in range(max(0, due)):
                if outstanding >= backlog:
                    shed += 1
                    continue
                device, cid = pairs[rng.randrange(len(pairs))]
                counter += 1
                device.send_text(cid, MESSAGE_TEXT.format(n=counter))
                outstanding += 1
            offered += max(0, due)
            await asyncio.sleep(SEND_TICK_S)
        del loop
        drained = await holds_within_async(lambda: all(not d.outbox for d in devices), timeout=120)
        top: dict[str, int] = {}
        for d in devices:
            for r in d.sent.values():
                if r.seq is not None:
                    key = str(r.conversation_id)
                    top[key] = max(top.get(key, 0), r.seq)
        results.put(("sent", plan.index, top, drained))
        expected: dict[str, int] = (await asyncio.to_thread(commands.get))[1]

        def all_delivered(expected: dict[str, int] = expected) -> bool:
            return all(
                state.contiguous >= expected.get(str(cid), 0) for d in devices for cid, state in d.conversations.items()
            )

        complete = await holds_within_async(all_delivered, timeout=120)
        sent = [
            (str(d.device_id), r.client_message_id, str(r.conversation_id), r.first_sent_ns, r.acked_ns, r.seq)
            for d in devices
            for r in d.sent.values()
        ]
        received = [
            (str(d.device_id), str(r.sender_device_id), r.client_message_id, r.decrypted_ns)
            for d in devices
            for c in d.conversations.values()
            for r in c.released
        ]
        stats = Counter[str]()
        stats["shed"] = shed
        for d in devices:
            for name in ("reconnects", "duplicates", "own_echoes", "out_of_order", "fetches", "resends"):
                stats[name] += getattr(d.stats, name)
            stats["errors"] += len(d.stats.errors)
            stats["decrypt_failures"] += len(d.stats.decrypt_failures)
            for code in d.stats.errors:
                stats[f"error:{code}"] += 1
            d.sent.clear()
            d.stats = DeviceStats()  # per-run counts
            for c in d.conversations.values():
                c.released.clear()
        results.put(("result", plan.index, sent, received, dict(stats), complete))
    for device in devices:
        await device.close()


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class CpuSample:
    daphne: float
    postgres: float | None
    redis: float | None
    loadgen: float


@dataclass
class LoadRun:
    rate: int
    run: int
    window_s: float
    offered: int  # sends first written in the window
    accepted: int  # `sent` frames received in the window
    delivered: int  # (message, recipient) decryptions in the window
    expected_deliveries: int  # of the messages sent in the window
    latency_ms: dict[str, float]  # p50, p95, p99, max over (message, recipient) of the window
    lost: int  # deliveries of window messages that never happened (after the drain)
    cpu: dict[str, float | None]  # CPU seconds per 1,000 accepted messages
    daphne_rss_mib: list[float]
    stats: dict[str, int]
    complete: bool  # every worker saw every acknowledged message at every recipient

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.window_s

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.window_s


@dataclass
class IdleStep:
    connections: int
    rss_mib: float  # sum over the daphne processes
    per_connection_kib: float
    open_seconds: float
    idle_cpu_percent: float  # of one core, all daphne processes, while the connections idle


@dataclass
class Report:
    machine: dict[str, Any]
    postgres: dict[str, Any]
    redis: dict[str, Any]
    args: dict[str, Any]
    runs: list[LoadRun] = field(default_factory=list)
    idle: list[IdleStep] = field(default_factory=list)
    idle_baseline_mib: float | None = None
    profile: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Provisioning


def conversation_pairs(users: int, conversations: int, rng: random.Random) -> list[tuple[int, int]]:
    """`conversations` distinct pairs of users, every user in about as many as any other."""
    if conversations > users * (users - 1) // 2:
        raise ValueError(f"{users} users make at most {users * (users - 1) // 2} distinct pairs")
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    offset = 1
    while len(pairs) < conversations:
        for i in range(users):
            j = (i + offset) % users
            pair = (min(i, j), max(i, j))
            if pair not in seen and i != j:
                seen.add(pair)
                pairs.append(pair)
                if len(pairs) == conversations:
                    break
        offset += 1
    rng.shuffle(pairs)
    return pairs


def provision_load(server_url: str, *, devices: int, conversations: int, seed: int) -> list[DeviceProfile]:
    users = max(2, devices // 2)
    tag = uuid.uuid4().hex[:6]
    names = [f"rt{tag}_{i}" for i in range(users)]
    pairs = conversation_pairs(users, conversations, random.Random(seed))
    population = population_create(
        server_url,
        usernames=names,
        devices_per_user=2,
        conversations=[[names[a], names[b]] for a, b in pairs],
        workers=16,
    )
    population.close()
    return population.profiles


# --------------------------------------------------------------------------------------------
# The load phase


class LoadGenerators:
    def __init__(self, profiles: list[DeviceProfile], servers: list[DaphneServer], *, workers: int, seed: int):
        context = mp.get_context("spawn")
        self.results: mp.Queue[Any] = context.Queue()
        self.commands: list[mp.Queue[Any]] = []
        self.processes: list[Any] = []
        self.pids: list[int] = []
        for w in range(workers):
            mine = [(i, p) for i, p in enumerate(profiles) if i % workers == w]
            plan = WorkerPlan(
                index=w,
                profiles=[p.to_dict() for _, p in mine],
                urls=[servers[i % len(servers)].url for i, _ in mine],
                seed=seed * 1000 + w,
            )
            commands: mp.Queue[Any] = context.Queue()
            process = context.Process(target=_worker_main, args=(plan, commands, self.results), daemon=True)
            process.start()
            self.commands.append(commands)
            self.processes.append(process)
        for _ in range(workers):
            kind, index, *rest = self._get(timeout=300)
            if kind != "ready":
                raise RuntimeError(f"worker {index} failed: {rest}")
            self.pids.append(int(rest[0]))

    def _get(self, *, timeout: float) -> tuple[Any, ...]:
        try:
            item: tuple[Any, ...] = self.results.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer from the load generators within {timeout:.0f} s") from None
        if item[0] == "failed":
            raise RuntimeError(f"load generator {item[1]} failed: {item[2]}")
        return item

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
        return total

    def run(
        self, *, rate: int, seconds: float, start_ns: int
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, int], bool]:
        share = rate / len(self.commands)
        for commands in self.commands:
            commands.put(("run", start_ns, seconds, share))
        expected: dict[str, int] = {}
        drained = True
        for _ in self.commands:
            _, _, top, ok = self._get(timeout=seconds + 300)
            drained = drained and ok
            for cid, seq in top.items():
                expected[cid] = max(expected.get(cid, 0), seq)
        for commands in self.commands:
            commands.put(("expect", expected))
        sent: list[tuple[Any, ...]] = []
        received: list[tuple[Any, ...]] = []
        stats: Counter[str] = Counter()
        complete = drained
        for _ in self.commands:
            _, _, s, r, st, ok = self._get(timeout=300)
            sent.extend(s)
            received.extend(r)
            stats.update(st)
            complete = complete and ok
        return sent, received, dict(stats), complete

    def stop(self) -> None:
        for commands in self.commands:
            commands.put(("stop",))
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


class CpuMeter:
    def __init__(
        self, servers: list[DaphneServer], postmaster: int | None, redis_pid: int | None, loadgen: LoadGenerators
    ):
        self.servers, self.postmaster, self.redis_pid, self.loadgen = servers, postmaster, redis_pid, loadgen

    def sample(self) -> CpuSample:
        return CpuSample(
            daphne=sum(process_cpu_seconds(s.pid) for s in self.servers),
            postgres=process_tree_cpu_seconds(self.postmaster) if self.postmaster else None,
            redis=process_cpu_seconds(self.redis_pid) if self.redis_pid else None,
            loadgen=self.loadgen.cpu_seconds(),
        )


def _per_1k(before: float | None, after: float | None, messages: int) -> float | None:
    if before is None or after is None or messages == 0:
        return None
    return (after - before) / messages * 1000


def load_run(
    *,
    rate: int,
    run: int,
    args: argparse.Namespace,
    loadgen: LoadGenerators,
    meter: CpuMeter,
    servers: list[DaphneServer],
) -> LoadRun:
    start_ns = time.monotonic_ns() + 500_000_000
    window_start = start_ns + int(args.warmup * 1e9)
    window_end = window_start + int(args.duration * 1e9)
    total = args.warmup + args.duration

    profiler: list[subprocess.Popen[bytes]] = []
    holder: dict[str, Any] = {}

    def sampler() -> None:
        time.sleep(max(0.0, (window_start - time.monotonic_ns()) / 1e9))
        holder["before"] = meter.sample()
        if args.profile_now:
            profiler.extend(_profile_start(servers, args.profile, args.duration))
        time.sleep(max(0.0, (window_end - time.monotonic_ns()) / 1e9))
        holder["after"] = meter.sample()

    import threading

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    sent, received, stats, complete = loadgen.run(rate=rate, seconds=total, start_ns=start_ns)
    thread.join()
    for process in profiler:
        process.wait(timeout=args.duration + 60)

    before: CpuSample = holder["before"]
    after: CpuSample = holder["after"]
    window = (window_end - window_start) / 1e9
    by_key = {(device, cmid): (first, acked, seq) for device, cmid, _c, first, acked, seq in sent}
    in_window = {k for k, (first, _a, _s) in by_key.items() if first is not None and window_start <= first < window_end}
    accepted = sum(1 for _f, acked, _s in by_key.values() if acked is not None and window_start <= acked < window_end)
    delivered = sum(1 for *_x, decrypted in received if window_start <= decrypted < window_end)
    latencies: list[float] = []
    for _device, sender, cmid, decrypted in received:
        key = (sender, cmid)
        if key in in_window:
            latencies.append((decrypted - by_key[key][0]) / 1e6)
    recipients = 3
    expected = len(in_window) * recipients
    cpu = {
        "daphne": _per_1k(before.daphne, after.daphne, accepted),
        "postgres": _per_1k(before.postgres, after.postgres, accepted),
        "redis": _per_1k(before.redis, after.redis, accepted),
        "loadgen": _per_1k(before.loadgen, after.loadgen, accepted),
    }
    return LoadRun(
        rate=rate,
        run=run,
        window_s=window,
        offered=len(in_window),
        accepted=accepted,
        delivered=delivered,
        expected_deliveries=expected,
        latency_ms={
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
        },
        lost=expected - len(latencies),
        cpu=cpu,
        daphne_rss_mib=[process_rss_mib(s.pid) for s in servers],
        stats=stats,
        complete=complete,
    )


# --------------------------------------------------------------------------------------------
# Profile (py-spy, when installed)


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _profile_start(servers: list[DaphneServer], directory: Path, seconds: float) -> list[subprocess.Popen[bytes]]:
    binary = _py_spy()
    if binary is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    processes = []
    for i, server in enumerate(servers):
        out = directory / f"daphne-{i}.collapsed"
        processes.append(
            subprocess.Popen(
                [
                    *(binary, "record", "--pid", str(server.pid), "--duration", str(int(seconds)), "--rate", "200"),
                    *("--format", "raw", "--nonblocking", "--threads", "--output", str(out)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return processes


def profile_summarise(directory: Path, *, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: share of samples per function, self and inclusive."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    total = 0
    for path in sorted(directory.glob("daphne-*.collapsed")):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if not f.startswith("thread (") and not f.startswith("process ")]
            if not frames:
                continue
            total += count
            self_time[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
            by_area[_area(frames)] += count
    if total == 0:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(self_time), "inclusive": share(inclusive), "areas": share(by_area)}


_AREAS = (
    ("idle (waiting for events)", ("select (selectors.py", "epoll", "_run_once", "wait (threading.py")),
    ("PostgreSQL driver (psycopg)", ("psycopg",)),
    ("Django ORM / SQL compiler", ("django/db",)),
    ("channels_redis / redis client", ("channels_redis", "redis/")),
    ("JSON encode/decode", ("json/",)),
    ("WebSocket framing (autobahn)", ("autobahn",)),
    ("twisted / daphne", ("twisted", "daphne")),
    ("asgiref sync/async bridging", ("asgiref",)),
    ("project code", ("messaging/", "conversations/", "devices/", "common/", "accounts/")),
)


def _area(frames: list[str]) -> str:
    leaf = frames[-1]
    for name, needles in _AREAS:
        if any(n in leaf for n in needles):
            return name
    for frame in reversed(frames):
        for name, needles in _AREAS[1:]:
            if any(n in frame for n in needles):
                return name + " (callee)"
    return "other"


# --------------------------------------------------------------------------------------------
# Idle connections


async def _idle_connection(url: str, token: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, subprotocols=[SUBPROTOCOL], compression=None, ping_interval=None, open_timeout=60)
    await ws.send(json.dumps({"type": "hello", "v": 1, "token": token}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"refused: {welcome}")

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    asyncio.get_running_loop().create_task(drain())
    return ws


async def idle_measure(
    *, steps: Sequence[int], tokens: list[str], servers: list[DaphneServer], settle_s: float
) -> tuple[float, list[IdleStep]]:
    urls = [ws_url(s.url) for s in servers]
    # Warm the processes' code paths with a few connections, closed again, before the baseline.
    warm = [await _idle_connection(urls[i % len(urls)], tokens[i]) for i in range(min(4 * len(urls), len(tokens)))]
    for ws in warm:
        await ws.close()
    await asyncio.sleep(settle_s)
    baseline = sum(process_rss_mib(s.pid) for s in servers)
    opened: list[Any] = []
    result = []
    for target in steps:
        started = time.monotonic()
        batch = 100
        while len(opened) < target:
            n = min(batch, target - len(opened))
            first = len(opened)
            opened.extend(
                await asyncio.gather(
                    *(_idle_connection(urls[(first + i) % len(urls)], tokens[first + i]) for i in range(n))
                )
            )
        took = time.monotonic() - started
        await asyncio.sleep(settle_s)  # let the servers finish catch-up and presence work
        # CPU the servers spend on connections that do nothing (heartbeats, presence, sweeps).
        cpu_before, cpu_started = sum(process_cpu_seconds(s.pid) for s in servers), time.monotonic()
        await asyncio.sleep(settle_s)
        idle_cpu = (sum(process_cpu_seconds(s.pid) for s in servers) - cpu_before) / (time.monotonic() - cpu_started)
        rss = sum(process_rss_mib(s.pid) for s in servers)
        result.append(
            IdleStep(
                connections=target,
                rss_mib=rss,
                per_connection_kib=(rss - baseline) * 1024 / target,
                open_seconds=took,
                idle_cpu_percent=100 * idle_cpu,
            )
        )
        log.info(
            "idle: %d connections, daphne RSS %.1f MiB (+%.1f KiB each)", target, rss, result[-1].per_connection_kib
        )
    for ws in opened:
        ws.transport.abort()
    return baseline, result


def provision_idle(server_url: str, count: int) -> list[str]:
    """`count` single-device accounts, paired into direct conversations; their tokens."""
    from concurrent.futures import ThreadPoolExecutor

    tag = uuid.uuid4().hex[:6]

    def register(i: int) -> str:
        session = user_register(server_url, f"idle{tag}_{i}")
        if i % 2 == 1:
            session.create_conversation([f"idle{tag}_{i - 1}"], kind="direct")
        token = session.secrets.token
        session.transport.close()  # type: ignore[attr-defined]
        if token is None:
            raise RuntimeError("registration returned no token")
        return token

    with ThreadPoolExecutor(max_workers=16) as pool:
        evens = list(pool.map(register, range(0, count, 2)))
        odds = list(pool.map(register, range(1, count, 2)))
    return [t for pair in zip(evens, odds, strict=False) for t in pair] + evens[len(odds) :]


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def render(report: Report) -> str:
    lines = []
    m = report.machine
    lines.append(
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"kernel {m['kernel']}, commit {m['commit']}; load average at start {report.args.get('loadavg')}."
    )
    pg = report.postgres
    lines.append(
        f"PostgreSQL {pg.get('version')} ({', '.join(f'{k} {v}' for k, v in pg.get('settings', {}).items())}); "
        f"Redis {report.redis.get('version', 'n/a')}; {report.args['server_processes']} daphne processes, "
        f"{report.args['workers']} load-generator processes, {report.args['devices']} devices, "
        f"{report.args['conversations']} conversations (sender + 3 recipients each)."
    )
    if report.runs:
        lines.append("")
        lines.append(
            "| offered msg/s | run | accepted msg/s | delivered/s (x3) | p50 ms | p95 ms | p99 ms | max ms | shed "
            "| lost | daphne CPU s/1k | PostgreSQL CPU s/1k | Redis CPU s/1k | load gen CPU s/1k |"
        )
        lines.append(
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        for rate in sorted({r.rate for r in report.runs}):
            runs = [r for r in report.runs if r.rate == rate]
            for r in runs:
                lines.append(_row(str(rate), str(r.run), r))
            if len(runs) > 1:
                lines.append(_median_row(rate, runs))
        lines.append("")
        for r in report.runs:
            lines.append(
                f"rate {r.rate} run {r.run}: stats {r.stats}; daphne RSS {r.daphne_rss_mib} MiB; complete {r.complete}"
            )
    if report.idle:
        lines.append("")
        lines.append(f"Idle connections (daphne RSS before: {_fmt(report.idle_baseline_mib, 1)} MiB, all processes):")
        lines.append("")
        lines.append(
            "| idle connections | daphne RSS MiB | growth per connection KiB | seconds to open | daphne CPU % idle |"
        )
        lines.append("| ---: | ---: | ---: | ---: | ---: |")
        for step in report.idle:
            lines.append(
                f"| {step.connections:,} | {_fmt(step.rss_mib, 1)} | {_fmt(step.per_connection_kib, 1)} "
                f"| {_fmt(step.open_seconds, 1)} | {_fmt(step.idle_cpu_percent, 1)} |"
            )
    if report.profile and report.profile.get("samples"):
        lines.append("")
        lines.append(f"Server profile (py-spy, {report.profile['samples']} samples over the daphne processes):")
        lines.append("")
        lines.append("| area (by leaf frame) | share % |")
        lines.append("| --- | ---: |")
        for name, pct in report.profile["areas"]:
            lines.append(f"| {name} | {pct} |")
        lines.append("")
        lines.append("Top functions by self time: " + "; ".join(f"{n} {p}%" for n, p in report.profile["self"][:12]))
    if report.problems:
        lines.append("")
        lines.append("PROBLEMS: " + "; ".join(report.problems))
    return "\n".join(lines)


def _row(rate: str, run: str, r: LoadRun) -> str:
    lat = r.latency_ms
    return (
        f"| {rate} | {run} | {_fmt(r.accepted_per_s, 0)} | {_fmt(r.delivered_per_s, 0)} | {_fmt(lat['p50'])} "
        f"| {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {_fmt(lat['max'])} | {r.stats.get('shed', 0)} | {r.lost} "
        f"| {_fmt(r.cpu['daphne'])} "
        f"| {_fmt(r.cpu['postgres'])} | {_fmt(r.cpu['redis'])} | {_fmt(r.cpu['loadgen'])} |"
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None


def _median_row(rate: int, runs: list[LoadRun]) -> str:
    def med(getter: Any) -> str:
        return _fmt(_median([getter(r) for r in runs]))

    return (
        f"| **{rate}** | median | {_fmt(_median([r.accepted_per_s for r in runs]), 0)} "
        f"| {_fmt(_median([r.delivered_per_s for r in runs]), 0)} | {med(lambda r: r.latency_ms['p50'])} "
        f"| {med(lambda r: r.latency_ms['p95'])} | {med(lambda r: r.latency_ms['p99'])} "
        f"| {med(lambda r: r.latency_ms['max'])} | {sum(r.stats.get('shed', 0) for r in runs)} "
        f"| {sum(r.lost for r in runs)} | {med(lambda r: r.cpu['daphne'])} "
        f"| {med(lambda r: r.cpu['postgres'])} | {med(lambda r: r.cpu['redis'])} | {med(lambda r: r.cpu['loadgen'])} |"
    )


# --------------------------------------------------------------------------------------------
# Main


def _redis_describe(url: str | None) -> dict[str, Any]:
    if not url:
        return {"version": "none (in-memory channel layer)"}
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        info = client.info("server")
    finally:
        client.close()
    return {"version": info.get("redis_version"), "pid": redis_local_pid(url)}


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def database_migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL server to use")
    parser.add_argument("--bench-database", help="database to create and drop (default <name>_rtbench)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="Redis (needed for >1 process)")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rate", default="200,1000", help="offered messages/s, comma-separated")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--idle", default="", help="idle connection counts, e.g. 1000,5000 (then no load runs)")
    parser.add_argument("--idle-settle", type=float, default=3.0, help="seconds to let the servers settle per step")
    parser.add_argument("--profile", type=Path, help="record the servers with py-spy into this folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.conversations, args.rate = 8, 4, "40"
        args.duration, args.warmup, args.runs, args.workers = 2.0, 1.0, 1, 1
        args.idle_settle = 1.0
        if args.idle:
            args.idle = "20,40"
    args.rates = [int(r) for r in str(args.rate).split(",") if r]
    args.idle_steps = [int(n) for n in str(args.idle).split(",") if n]
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    if args.server_processes > 1 and not args.redis_url:
        parser.error("several server processes need a shared channel layer: pass --redis-url")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        require_postgres(args.database_url)
    except NotPostgresError as exc:
        print(exc, file=sys.stderr)
        return 2
    source_url = args.database_url
    bench_name = args.bench_database or f"{database_name(source_url)}_rtbench"
    bench_url = with_database_name(source_url, bench_name)
    fd_limit = _raise_fd_limit()
    needed = max(args.idle_steps, default=args.devices) + 200
    if fd_limit < needed:
        print(f"RLIMIT_NOFILE hard limit {fd_limit} < {needed}: raise it (ulimit -Hn) first", file=sys.stderr)
        return 2
    log.info("bench database %s on %s", bench_name, redact(source_url))
    database_recreate(source_url=source_url, name=bench_name)
    report: Report | None = None
    servers: list[DaphneServer] = []
    workdir = Path(tempfile.mkdtemp(prefix="rtbench-"))
    try:
        database_migrate(bench_url)
        extra_env = {"REDIS_URL": args.redis_url} if args.redis_url else {"REDIS_URL": ""}
        for i in range(args.server_processes):
            server = DaphneServer(
                database_url=bench_url,
                log_path=workdir / f"daphne-{i}.log",
                settings_module=SETTINGS_MODULE,
                extra_env=extra_env,
            )
            server.start()
            servers.append(server)
        pg = postgres_describe(bench_url)
        report = Report(
            machine=machine_describe(REPO).as_dict(),
            postgres=pg.as_dict(),
            redis=_redis_describe(args.redis_url),
            args={
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("database_url", "redis_url")
            }
            | {"loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "fd_limit": fd_limit},
        )
        if args.idle_steps:
            log.info("provisioning %d idle devices", max(args.idle_steps))
            tokens = provision_idle(servers[0].url, max(args.idle_steps))
            baseline, steps = asyncio.run(
                idle_measure(steps=args.idle_steps, tokens=tokens, servers=servers, settle_s=args.idle_settle)
            )
            report.idle_baseline_mib, report.idle = baseline, steps
        else:
            log.info("provisioning %d devices in %d conversations", args.devices, args.conversations)
            profiles = provision_load(
                servers[0].url, devices=args.devices, conversations=args.conversations, seed=args.seed
            )
            loadgen = LoadGenerators(profiles, servers, workers=args.workers, seed=args.seed)
            try:
                meter = CpuMeter(servers, pg.postmaster_pid, report.redis.get("pid"), loadgen)
                for rate in args.rates:
                    for run in range(1, args.runs + 1):
                        args.profile_now = bool(args.profile) and rate == max(args.rates) and run == 1
                        result = load_run(rate=rate, run=run, args=args, loadgen=loadgen, meter=meter, servers=servers)
                        report.runs.append(result)
                        log.info(
                            "rate %d run %d: accepted %.0f/s, delivered %.0f/s, p50 %.1f p99 %.1f ms, lost %d",
                            rate,
                            run,
                            result.accepted_per_s,
                            result.delivered_per_s,
                            result.latency_ms["p50"],
                            result.latency_ms["p99"],
                            result.lost,
                        )
                        if result.lost or not result.complete:
                            report.problems.append(f"rate {rate} run {run}: {result.lost} deliveries lost")
                        if result.stats.get("decrypt_failures"):
                            report.problems.append(f"rate {rate} run {run}: decrypt failures")
            finally:
                loadgen.stop()
            if args.profile:
                report.profile = profile_summarise(args.profile)
    finally:
        for server in servers:
            server.stop()
        database_drop(source_url=source_url, name=bench_name)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
