"""Do sending and reading a history page cost the same at 1,000, 100,000 and 1,000,000 messages?

    python -m bench.history_flatness --database-url postgresql://user@host:port/name \\
        [--sizes 1000,100000,1000000] [--sends 500] [--reads 250] [--runs 5] [--json PATH]

The production setup, end to end: a real daphne process serving the project over a socket, real
SDK sessions (HPKE-wrapped ChatKey, AES-GCM + Ed25519 on every send) over keep-alive HTTP, and a
real PostgreSQL. It works in its own database (`<name>_bench` by default, dropped and re-created,
dropped again at the end) on the server the URL names; it never touches the URL's database.

For each history size, in increasing order, on one conversation whose history only grows:
  1. fill the history up to the size by COPY (setup, not measured), VACUUM ANALYZE, CHECKPOINT,
     restart the server (each size is measured by an equally fresh process), warm up;
  2. `--runs` times: `--sends` sends, then `--reads` history pages (limit 100) just before the end
     of the history (after = last_seq - 100) and as many at its start (after = 0), each request
     timed alone, sequentially; the CPU the daphne process (and the local PostgreSQL) used;
  3. in this process, with the same database: SQL queries per send (`envelope_send`) and per
     page (`message_history_page` + the envelope serializer), per whole HTTP request (Django test
     client), and EXPLAIN (ANALYZE, BUFFERS) of each read query.
The report (Markdown, stdout) gives medians over the runs of each run's p50 and p95.
`--settings` runs another Django settings module (on PYTHONPATH), to compare configurations.
Needs PostgreSQL 14+ (pg_stat_wal, pg_stat_database.sessions).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import secrets
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.database import (
    NotPostgresError,
    PostgresInfo,
    admin_connection,
    check_bench_name,
    database_drop,
    database_name,
    database_recreate,
    database_settle,
    history_fill,
    postgres_describe,
    redact,
    require_postgres,
    with_database_name,
)
from bench.machine import (
    Machine,
    machine_describe,
    process_cpu_seconds,
    process_rss_mib,
    process_tree_cpu_seconds,
)
from client import protocol as proto
from client.core.envelope import envelope_seal
from client.crypto.message import SealedMessage, message_encrypt
from client.session import ReceivedMessage, Session
from client.transport.http import HttpTransport
from harness.server import REPO, DaphneServer

PAGE_LIMIT = 100
# Below this many messages the planner may rightly prefer a sequential scan to the index.
SEQ_SCAN_MATTERS = 10_000
DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
# A text of ordinary length: its padded ciphertext is two 64-byte blocks plus the tag.
MESSAGE_TEXT = "benchmark message {i}: the quick brown fox jumps over the lazy dog"

log = logging.getLogger("bench")


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Latencies:
    """One phase of one run: per-request client-side wall times, and CPU used meanwhile."""

    ms: list[float]
    server_ms: list[float]  # the server's own duration for the same requests (its request log)
    daphne_cpu_s: float
    postgres_cpu_s: float | None  # None when the PostgreSQL server is not local

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 95)

    @property
    def server_p50(self) -> float:
        return statistics.median(self.server_ms) if self.server_ms else math.nan


@dataclass
class RunResult:
    send: Latencies
    page_end: Latencies
    page_start: Latencies
    # Server state after the run: a drift over the runs of one size points at the server's age
    # (memory, open connections), not at the history's size.
    server_rss_mib: float
    db_backends: int  # connections open on the bench database


@dataclass
class QueryProbe:
    """The SQL one operation ran (in this process, on the bench database)."""

    count: int
    labels: list[str]
    plans: list[dict[str, Any]] = field(default_factory=list)  # EXPLAIN summaries of its reads


@dataclass
class SizeResult:
    target: int
    history_before: int  # last_seq when timing started at this size
    history_after: int  # ... and when it ended (the timed sends add to it)
    fill_rows: int
    fill_seconds: float
    runs: list[RunResult]
    queries: dict[str, QueryProbe]
    sessions_per_request: float  # new PostgreSQL connections per HTTP request
    blocks_read_per_request: float  # blocks PostgreSQL did not find in shared buffers
    wal_bytes_per_send: float
    wal_fpi_per_send: float  # full-page images: first change to a page after a checkpoint
    decrypted_end_page: int  # of the last page, how many the reading device decrypted and verified
    sent_in_end_page: int  # ... and how many of them were real SDK messages (the rest are fill)

    def latency(self, phase: str, stat: str) -> float:
        """Median over the runs of one phase's per-run statistic (`p50`, `p95`, `server_p50`)."""
        return statistics.median(float(getattr(getattr(run, phase), stat)) for run in self.runs)

    def cpu_per_1k(self, phase: str, which: str) -> float | None:
        values = []
        for run in self.runs:
            lat: Latencies = getattr(run, phase)
            cpu = lat.daphne_cpu_s if which == "daphne" else lat.postgres_cpu_s
            if cpu is None:
                return None
            values.append(cpu / len(lat.ms) * 1000)
        return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a value that was actually observed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------------------------
# In-process probes (Django set up against the bench database)


def django_setup(database_url: str, settings_module: str = "config.settings") -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    # Django's LOGGING (JSON lines, INFO, on the root logger) now applies to this process too:
    # quieten the per-request lines of the in-process probes and httpx's line per request.
    for name in ("e2ee.request", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def database_migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"([a-z_]+)"', re.IGNORECASE)


def _query_label(sql: str) -> str:
    """`SELECT messaging_message`, `UPDATE conversations_conversation`, `BEGIN`: what, not which."""
    verb = sql.lstrip().split(None, 1)[0].upper()
    table = _TABLE.search(sql)
    label = f"{verb} {table.group(1)}" if table else verb
    return label + (" FOR UPDATE" if "FOR UPDATE" in sql.upper() else "")


def _plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    """Which nodes and indexes, how many buffers, how long: enough to see whether it scales."""
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        name = node["Node Type"]
        if "Index Name" in node:
            name += f" using {node['Index Name']}"
        elif "Relation Name" in node:
            name += f" on {node['Relation Name']}"
        nodes.append(name)
        for child in node.get("Plans", []):
            walk(child)

    root = plan["Plan"]
    walk(root)
    return {
        "nodes": nodes,
        "shared_blocks": int(root.get("Shared Hit Blocks", 0)) + int(root.get("Shared Read Blocks", 0)),
        "rows": int(root.get("Actual Rows", 0)),
        "execution_ms": float(plan.get("Execution Time", 0.0)),
        "seq_scan_on_messages": any(n == "Seq Scan on messaging_message" for n in nodes),
    }


def _probe(operation: Callable[[], object], *, explain: bool) -> QueryProbe:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        operation()
    sqls = [q["sql"] for q in captured.captured_queries]
    probe = QueryProbe(count=len(sqls), labels=[_query_label(s) for s in sqls])
    if explain:
        for sql in sqls:
            # Reads only: EXPLAIN ANALYZE executes the statement. The captured SQL has its
            # parameters inlined (psycopg 3 client-side binding), so it runs as it is.
            if not sql.lstrip().upper().startswith("SELECT") or "FOR UPDATE" in sql.upper():
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
                row = cursor.fetchone()
            document = row[0] if row else []
            plan = json.loads(document) if isinstance(document, str) else document
            probe.plans.append({"label": _query_label(sql), **_plan_summary(plan[0])})
    return probe


def query_probes(*, sender: Session, reader: Session, conversation_id: uuid.UUID) -> dict[str, QueryProbe]:
    """SQL per send and per page, at the service/selector level and for a whole HTTP request."""
    from django.test import Client

    from conversations.models import Conversation
    from devices.models import Device
    from messaging.selectors import message_history_page
    from messaging.serializers import EnvelopeSerializer
    from messaging.services import EnvelopeContent, envelope_send

    conversation = Conversation.objects.get(pk=conversation_id)
    # As the authentication backend loads it: the device with its user.
    device = Device.objects.select_related("user").get(pk=sender.device_id)
    sdk_conversation = sender.conversation(conversation_id, refresh=True)
    epoch = sdk_conversation.current_epoch
    chat_key = sender.chat_key(sdk_conversation, epoch)
    device_lists = sender.lists_seen(sdk_conversation)

    def _payload(i: int) -> dict[str, object]:
        return {"type": "text", "body": MESSAGE_TEXT.format(i=i), "sent_at_ms": int(time.time() * 1000)}

    def sealed(i: int) -> SealedMessage:
        # A real envelope, encrypted and signed by the sending device like any SDK send.
        return message_encrypt(
            chat_key=chat_key,
            conversation_id=conversation_id,
            epoch=epoch,
            sender=sender.secrets.device,
            payload=_payload(i),
            device_lists=device_lists,
        )

    def send() -> None:
        s = sealed(0)
        content = EnvelopeContent(
            conversation_id=conversation_id,
            version=s.version,
            epoch=s.epoch,
            client_message_id=s.client_message_id,
            nonce=s.nonce,
            ciphertext=s.ciphertext,
            signature=s.signature,
            device_lists=s.device_lists,
        )
        if not envelope_send(device=device, sender_device_id=device.id, content=content).created:
            raise AssertionError("the probe send was not stored")

    def page(after: int) -> Callable[[], object]:
        def read() -> object:
            result = message_history_page(conversation=conversation, after=after, limit=PAGE_LIMIT)
            # Serialising is part of the cost: an N+1 on sender usernames would show up here.
            return EnvelopeSerializer(result.messages, many=True).data

        return read

    probes = {"send": _probe(send, explain=True)}
    conversation.refresh_from_db()
    probes["page_end"] = _probe(page(max(0, conversation.last_seq - PAGE_LIMIT)), explain=True)
    probes["page_start"] = _probe(page(0), explain=True)

    # Whole requests through the view stack (authentication, permission, view, serializer). The
    # device's last_seen_at is written at most once a minute, adding queries to one request in a
    # while; the fewest of three consecutive requests is the steady state.
    client = Client()
    headers = {"Authorization": f"Bearer {sender.secrets.token}"}
    reader_headers = {"Authorization": f"Bearer {reader.secrets.token}"}

    def http_send(i: int) -> Callable[[], object]:
        def post() -> object:
            request = envelope_seal(
                chat_key=chat_key,
                conversation_id=conversation_id,
                epoch=epoch,
                sender=sender.secrets.device,
                payload=_payload(i),
                lists_seen=device_lists,
            ).request
            response = client.post(
                request.path, data=json.dumps(request.json), content_type="application/json", headers=headers
            )
            if response.status_code != 201:
                raise AssertionError(f"in-process send answered {response.status_code}: {response.content[:200]!r}")
            return response

        return post

    conversation.refresh_from_db()
    page_request = proto.history_request(conversation_id, after=max(0, conversation.last_seq - PAGE_LIMIT))

    def http_page() -> object:
        response = client.get(page_request.path, page_request.params, headers=reader_headers)
        if response.status_code != 200:
            raise AssertionError(f"in-process page answered {response.status_code}")
        return response

    probes["send_request"] = min((_probe(http_send(i), explain=False) for i in range(3)), key=lambda p: p.count)
    probes["page_request"] = min((_probe(http_page, explain=False) for _ in range(3)), key=lambda p: p.count)
    return probes


# --------------------------------------------------------------------------------------------
# Over HTTP against the daphne process


class ServerLog:
    """The server's per-request JSON log lines written since the last call (duration_ms by path)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def skip(self) -> None:
        self._offset = self.path.stat().st_size

    def durations(self, *, method: str) -> list[float]:
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        durations = []
        for line in data.splitlines():
            if not line.startswith(b"{"):
                continue  # daphne's own access-log lines
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("logger") == "e2ee.request" and record.get("method") == method:
                durations.append(float(record["duration_ms"]))
        return durations


class Phase:
    """Times `count` calls one after the other and samples CPU around all of them."""

    def __init__(self, *, server_pid: int, postmaster_pid: int | None, server_log: ServerLog) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.server_log = server_log

    def run(self, count: int, call: Callable[[int], None], *, method: str) -> Latencies:
        self.server_log.skip()
        pg_before = process_tree_cpu_seconds(self.postmaster_pid) if self.postmaster_pid else None
        cpu_before = process_cpu_seconds(self.server_pid)
        timings = []
        for i in range(count):
            started = time.perf_counter_ns()
            call(i)
            timings.append((time.perf_counter_ns() - started) / 1e6)
        cpu = process_cpu_seconds(self.server_pid) - cpu_before
        pg_cpu = None
        if self.postmaster_pid and pg_before is not None:
            pg_cpu = process_tree_cpu_seconds(self.postmaster_pid) - pg_before
        return Latencies(
            ms=timings, server_ms=self.server_log.durations(method=method), daphne_cpu_s=cpu, postgres_cpu_s=pg_cpu
        )


@dataclass
class Fixture:
    """The two devices and the conversation every size is measured on."""

    sender: Session
    reader: Session
    conversation_id: uuid.UUID
    epoch: int
    last_seq: int = 0

    def send(self, i: int) -> None:
        envelope = self.sender.send_text(self.conversation_id, MESSAGE_TEXT.format(i=i))
        self.last_seq = envelope.seq

    @property
    def end_cursor(self) -> int:
        """`after` for the last full page of the history."""
        return max(0, self.last_seq - PAGE_LIMIT)

    def page_reader(self, after: int) -> Callable[[int], None]:
        expected = min(PAGE_LIMIT, self.last_seq - after)

        def read(_: int) -> None:
            # Round trip and SDK parsing of the page; decrypting is client work that cannot
            # depend on the server's history (and filled rows are random bytes, undecryptable).
            _, body = self.reader.transport.execute(
                proto.history_request(self.conversation_id, after=after, limit=PAGE_LIMIT)
            )
            page = proto.parse_history(body)
            if len(page.messages) != expected:
                raise AssertionError(f"page after {after} had {len(page.messages)} messages, expected {expected}")

        return read


def fixture_create(server_url: str) -> Fixture:
    """Two accounts registered through the SDK, and a direct conversation between them."""
    tag = secrets.token_hex(3)
    password = secrets.token_urlsafe(18)
    sender = Session.register(
        HttpTransport(server_url),
        server_url=server_url,
        username=f"bench_sender_{tag}",
        password=password,
        device_name="bench sender",
    )
    reader = Session.register(
        HttpTransport(server_url),
        server_url=server_url,
        username=f"bench_reader_{tag}",
        password=password,
        device_name="bench reader",
    )
    conversation = sender.create_conversation([reader.username], kind="direct")
    return Fixture(
        sender=sender,
        reader=reader,
        conversation_id=conversation.conversation_id,
        epoch=conversation.current_epoch,
        last_seq=conversation.last_seq,
    )


def backends_open(*, source_url: str, bench_name: str) -> int:
    with admin_connection(source_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (bench_name,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class DatabaseCounters:
    """Cumulative PostgreSQL statistics: connections opened and blocks read on the bench database,
    WAL written by the whole server (pg_stat_wal, PostgreSQL 14+; our sends are its only writers)."""

    sessions: int
    blocks_read: int  # into shared buffers, from the OS (page cache or disk)
    wal_bytes: int
    wal_full_page_images: int

    def __sub__(self, other: DatabaseCounters) -> DatabaseCounters:
        return DatabaseCounters(
            sessions=self.sessions - other.sessions,
            blocks_read=self.blocks_read - other.blocks_read,
            wal_bytes=self.wal_bytes - other.wal_bytes,
            wal_full_page_images=self.wal_full_page_images - other.wal_full_page_images,
        )


def database_counters(*, source_url: str, bench_name: str) -> DatabaseCounters:
    # From the maintenance database, so that asking does not itself open a bench session. Backends
    # publish their statistics at most once a second: let them settle before calling this.
    with admin_connection(source_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sessions, 0), blks_read FROM pg_stat_database WHERE datname = %s", (bench_name,)
        ).fetchone()
        wal = conn.execute("SELECT wal_bytes, wal_fpi FROM pg_stat_wal").fetchone()
    return DatabaseCounters(
        sessions=int(row[0]) if row else 0,
        blocks_read=int(row[1]) if row else 0,
        wal_bytes=int(wal[0]) if wal else 0,
        wal_full_page_images=int(wal[1]) if wal else 0,
    )


def measure_size(
    *,
    target: int,
    args: argparse.Namespace,
    fixture: Fixture,
    server: DaphneServer,
    pg: PostgresInfo,
    bench_url: str,
    source_url: str,
    bench_name: str,
) -> SizeResult:
    senders = [fixture.sender.device_id, fixture.reader.device_id]
    log.info("size %s: filling the history", f"{target:,}")
    fill = history_fill(
        bench_url, conversation_id=fixture.conversation_id, senders=senders, epoch=fixture.epoch, upto=target
    )
    if fill.last_seq > target:
        log.warning("history is already %s > %s: the previous size's sends overshot it", fill.last_seq, target)
    fixture.last_seq = fill.last_seq
    log.info("size %s: filled %s rows in %.1f s; vacuum, analyze, checkpoint", f"{target:,}", fill.rows, fill.seconds)
    database_settle(bench_url)
    # Each size gets a server process of the same age: otherwise the largest size, measured last,
    # would also be the one served by the process that has handled the most requests.
    server.restart()

    phase = Phase(server_pid=server.pid, postmaster_pid=pg.postmaster_pid, server_log=ServerLog(server.log_path))
    # Untimed warm-up: caches and the connection after the bulk load and the vacuum.
    for i in range(args.warmup):
        fixture.send(i)
    for after in (fixture.end_cursor, 0):
        reader = fixture.page_reader(after)
        for i in range(args.warmup):
            reader(i)
    history_before = fixture.last_seq
    time.sleep(1.5)  # let backends publish their statistics (at most once a second)
    counters_before = database_counters(source_url=source_url, bench_name=bench_name)

    runs = []
    for run in range(args.runs):
        send = phase.run(args.sends, fixture.send, method="POST")
        page_end = phase.run(args.reads, fixture.page_reader(fixture.end_cursor), method="GET")
        page_start = phase.run(args.reads, fixture.page_reader(0), method="GET")
        runs.append(
            RunResult(
                send=send,
                page_end=page_end,
                page_start=page_start,
                server_rss_mib=process_rss_mib(server.pid),
                db_backends=backends_open(source_url=source_url, bench_name=bench_name),
            )
        )
        log.info(
            "size %s run %d/%d: send p50 %.2f ms, page@end p50 %.2f ms, page@start p50 %.2f ms",
            f"{target:,}",
            run + 1,
            args.runs,
            send.p50,
            page_end.p50,
            page_start.p50,
        )
    time.sleep(1.5)
    counters = database_counters(source_url=source_url, bench_name=bench_name) - counters_before
    requests = args.runs * (args.sends + 2 * args.reads)
    history_after = fixture.last_seq

    queries = query_probes(sender=fixture.sender, reader=fixture.reader, conversation_id=fixture.conversation_id)
    # The end of history is now mostly real SDK messages: the reading device must decrypt and
    # verify every one of them (the filled rows before them are random bytes).
    last = fixture.sender.conversation(fixture.conversation_id, refresh=True).last_seq
    decrypted = sum(
        isinstance(m, ReceivedMessage)
        for m in fixture.reader.history(fixture.conversation_id, after=max(0, last - PAGE_LIMIT))
    )
    sent_in_end_page = min(PAGE_LIMIT, last - fill.last_seq)
    fixture.last_seq = last
    return SizeResult(
        target=target,
        history_before=history_before,
        history_after=history_after,
        fill_rows=fill.rows,
        fill_seconds=fill.seconds,
        runs=runs,
        queries=queries,
        sessions_per_request=counters.sessions / requests,
        blocks_read_per_request=counters.blocks_read / requests,
        # Only sends write: WAL over the runs divided by the sends.
        wal_bytes_per_send=counters.wal_bytes / (args.runs * args.sends),
        wal_fpi_per_send=counters.wal_full_page_images / (args.runs * args.sends),
        decrypted_end_page=decrypted,
        sent_in_end_page=sent_in_end_page,
    )


# --------------------------------------------------------------------------------------------
# Report


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(first: float | None, last: float | None) -> str:
    if first is None or last is None or first == 0:
        return "n/a"
    return f"x{last / first:.2f}"


@dataclass(frozen=True)
class Report:
    command: str
    machine: Machine
    pg: PostgresInfo
    args: argparse.Namespace
    results: list[SizeResult]
    wall_seconds: float
    channel_layer: str


def report_markdown(report: Report) -> str:
    args, results, machine, pg = report.args, report.results, report.machine, report.pg
    pg_settings = ", ".join(f"{k} {v}" for k, v in pg.settings.items())
    lines = [
        "## History flatness benchmark",
        "",
        f"Command: `{report.command}`",
        "",
        f"Machine: {machine.cpus} CPUs ({machine.cpu_model}), {machine.ram_gib} GiB RAM, Linux {machine.kernel}, "
        f"Python {machine.python}; PostgreSQL {pg.version} ({pg_settings}) "
        f"{'on the same machine' if pg.postmaster_pid else '(remote or not visible in /proc)'}; "
        f"channel layer {report.channel_layer}; settings {args.settings}; code at {machine.commit}. "
        f"Wall time {report.wall_seconds / 60:.1f} min.",
        "",
        f"Per size: {args.runs} runs of {args.sends} sends, then {args.reads} history pages (limit {PAGE_LIMIT}) "
        f"at the end of history (`after = last_seq - {PAGE_LIMIT}`) and {args.reads} at its start (`after = 0`), "
        "each request timed alone on the client (SDK encryption and parsing included), sequential, one "
        "keep-alive connection per device, server = one daphne process. Latencies are medians over the runs of "
        "each run's p50 and p95, in ms; CPU is CPU seconds per 1,000 sends (median over runs); SQL counts "
        "are queries per operation in the service/selector, and per whole HTTP request in brackets.",
        "",
        "| history (messages) | send p50 | send p95 | page @end p50 | page @end p95 | page @start p50 "
        "| page @start p95 | server CPU s / 1k sends | PostgreSQL CPU s / 1k sends | SQL / send | SQL / page |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        q = r.queries
        latencies = " | ".join(
            _ms(r.latency(phase, stat)) for phase in ("send", "page_end", "page_start") for stat in ("p50", "p95")
        )
        lines.append(
            f"| {r.target:,} | {latencies} | {_cpu(r.cpu_per_1k('send', 'daphne'))} "
            f"| {_cpu(r.cpu_per_1k('send', 'postgres'))} "
            f"| {q['send'].count} ({q['send_request'].count}) | {q['page_end'].count} ({q['page_request'].count}) |"
        )
    first, last = results[0], results[-1]
    ratios = ", ".join(
        [
            *(
                f"{name} p50 {_ratio(first.latency(phase, 'p50'), last.latency(phase, 'p50'))}"
                for name, phase in (("send", "send"), ("page @end", "page_end"), ("page @start", "page_start"))
            ),
            *(
                f"{name} CPU per send {_ratio(first.cpu_per_1k('send', which), last.cpu_per_1k('send', which))}"
                for name, which in (("server", "daphne"), ("PostgreSQL", "postgres"))
            ),
            f"WAL per send {_ratio(first.wal_bytes_per_send, last.wal_bytes_per_send)}",
        ]
    )
    lines += [
        "",
        f"{last.target:,} vs {first.target:,} messages: {ratios}.",
        "",
        "Details per size: how the history grew while timed; each run's send p50; the server's own duration "
        "for the request (its request log, median over runs of p50); new PostgreSQL connections per HTTP "
        "request, and blocks PostgreSQL had to read into its buffers per request; WAL written per send; the "
        "server's resident memory after each run; the SDK messages on the last page that the reading device "
        "decrypted and verified.",
        "",
        "| history | grew while timed | send p50 per run (ms) | server-side send p50 | server-side page @end p50 "
        "| server CPU s / 1k pages @end | DB connections / request | blocks read / request | WAL bytes / send "
        "| WAL full-page images / send | server RSS per run (MiB) | end page decrypted |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        run_p50s = " ".join(_ms(run.send.p50) for run in r.runs)
        lines.append(
            f"| {r.target:,} | {r.history_before:,} → {r.history_after:,} | {run_p50s} "
            f"| {_ms(r.latency('send', 'server_p50'))} | {_ms(r.latency('page_end', 'server_p50'))} "
            f"| {_cpu(r.cpu_per_1k('page_end', 'daphne'))} | {r.sessions_per_request:.2f} "
            f"| {r.blocks_read_per_request:.2f} | {r.wal_bytes_per_send:,.0f} | {r.wal_fpi_per_send:.2f} "
            f"| {' '.join(f'{run.server_rss_mib:.0f}' for run in r.runs)} "
            f"| {r.decrypted_end_page}/{r.sent_in_end_page} |"
        )
    lines += [
        "",
        "Read queries, EXPLAIN (ANALYZE, BUFFERS) in-process at each size (shared buffers touched; plan at the "
        "largest size):",
        "",
        "| operation | query | " + " | ".join(f"{r.target:,}" for r in results) + " | plan |",
        "| --- | --- | " + " | ".join("---:" for _ in results) + " | --- |",
    ]
    for operation in ("send", "page_end", "page_start"):
        for index, plan in enumerate(last.queries[operation].plans):
            buffers = []
            for r in results:
                plans = r.queries[operation].plans
                buffers.append(str(plans[index]["shared_blocks"]) if index < len(plans) else "?")
            lines.append(
                f"| {operation} | {plan['label']} | " + " | ".join(buffers) + f" | {' → '.join(plan['nodes'])} |"
            )
    sql_send = ", ".join(last.queries["send"].labels)
    lines += ["", f"SQL of one send ({last.queries['send'].count}): {sql_send}."]
    problems = problems_found(results)
    lines += [""] + ([f"**Warning:** {p}" for p in problems] or ["No query count or plan changed with history size."])
    return "\n".join(lines) + "\n"


def problems_found(results: list[SizeResult]) -> list[str]:
    """Facts that contradict flatness (not timings: those are for a reader to judge with the noise)."""
    problems = []
    for operation in ("send", "page_end", "page_start", "send_request", "page_request"):
        counts = {r.target: r.queries[operation].count for r in results}
        if len(set(counts.values())) > 1:
            problems.append(f"queries per {operation} change with history: {counts}")
        for r in results:
            for plan in r.queries[operation].plans:
                # On a few hundred rows a sequential scan is the planner's right choice; on a big
                # history it would be per-message work.
                if plan["seq_scan_on_messages"] and r.target >= SEQ_SCAN_MATTERS:
                    problems.append(f"{operation} at {r.target:,} messages scans messaging_message sequentially")
        # Compared only between big histories: on small ones the planner switches between a
        # sequential scan and the index, and the buffer counts say nothing about growth.
        if len(results) >= 2 and results[-2].target >= SEQ_SCAN_MATTERS:
            before, last = results[-2].queries[operation].plans, results[-1].queries[operation].plans
            for plan_before, plan_last in zip(before, last, strict=False):
                # A deeper B-tree costs a block or two more; anything beyond is work that grows.
                if plan_last["shared_blocks"] > 1.5 * plan_before["shared_blocks"] + 20:
                    problems.append(
                        f"{operation} {plan_last['label']} touches {plan_last['shared_blocks']} buffers at "
                        f"{results[-1].target:,} messages, {plan_before['shared_blocks']} at {results[-2].target:,}"
                    )
    for r in results:
        if r.decrypted_end_page != r.sent_in_end_page:
            problems.append(
                f"at {r.target:,} the reader decrypted {r.decrypted_end_page} of the {r.sent_in_end_page} "
                "SDK messages on the last page"
            )
    return problems


def results_json(report: Report) -> dict[str, Any]:
    args, results = report.args, report.results
    return {
        "command": report.command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": report.wall_seconds,
        "machine": report.machine.as_dict(),
        "postgres": report.pg.as_dict(),
        "channel_layer": report.channel_layer,
        "config": {
            "sizes": args.sizes,
            "sends": args.sends,
            "reads": args.reads,
            "runs": args.runs,
            "warmup": args.warmup,
            "page_limit": PAGE_LIMIT,
        },
        "summary": [
            {
                "target": r.target,
                "history": [r.history_before, r.history_after],
                **{
                    f"{phase}_{stat}_ms": r.latency(phase, stat)
                    for phase in ("send", "page_end", "page_start")
                    for stat in ("p50", "p95", "server_p50")
                },
                "server_cpu_s_per_1k_sends": r.cpu_per_1k("send", "daphne"),
                "postgres_cpu_s_per_1k_sends": r.cpu_per_1k("send", "postgres"),
                "db_connections_per_request": r.sessions_per_request,
                "blocks_read_per_request": r.blocks_read_per_request,
                "wal_bytes_per_send": r.wal_bytes_per_send,
                "wal_fpi_per_send": r.wal_fpi_per_send,
                "queries": {operation: probe.count for operation, probe in r.queries.items()},
            }
            for r in results
        ],
        "sizes": [asdict(r) for r in results],
        "problems": problems_found(results),
    }


# --------------------------------------------------------------------------------------------
# Command line


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive numbers of messages")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history_flatness",
        description="Send and history-page cost at several history sizes, on PostgreSQL, through a real server.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="a PostgreSQL server (default $DATABASE_URL); the benchmark works in its own database on it",
    )
    parser.add_argument(
        "--bench-database", help="name of the database to drop, create and fill (default: <URL's name>_bench)"
    )
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="history sizes, comma-separated")
    parser.add_argument("--sends", type=_positive, default=500, help="timed sends per run and size")
    parser.add_argument(
        "--reads", type=_positive, default=250, help="timed page reads per run and size, at each of the two cursors"
    )
    parser.add_argument("--runs", type=_positive, default=5, help="repetitions per size")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests of each kind per size")
    parser.add_argument("--port", type=int, default=0, help="port for the server (default: a free one)")
    parser.add_argument(
        "--settings",
        default="config.settings",
        help="Django settings module for the server and the in-process probes, to compare configurations "
        "(default: config.settings, the production settings)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the bench database at the end")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or $DATABASE_URL) is required: a PostgreSQL server to benchmark on")
    try:
        require_postgres(args.database_url)
        args.bench_database = args.bench_database or f"{database_name(args.database_url) or 'e2ee'}_bench"
        check_bench_name(source_url=args.database_url, name=args.bench_database)
    except (NotPostgresError, ValueError) as exc:
        parser.error(str(exc))
    return args


def _command_line(argv: Sequence[str]) -> str:
    shown = []
    for arg in argv:
        shown.append(redact(arg) if "://" in arg else arg)
    return shlex.join(["python", "-m", "bench.history_flatness", *shown])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # Progress on stderr, on its own handler: Django's logging setup replaces the root logger's.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    started = time.monotonic()
    command = _command_line(argv)
    source_url: str = args.database_url
    bench_url = with_database_name(source_url, args.bench_database)
    machine = machine_describe(REPO)

    log.info("database %s: drop, create, migrate", args.bench_database)
    database_recreate(source_url=source_url, name=args.bench_database)
    pg = postgres_describe(bench_url)
    django_setup(bench_url, args.settings)
    channel_layer = "Redis" if os.environ.get("REDIS_URL") else "in-memory"
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-history-") as scratch:
        server = DaphneServer(
            database_url=bench_url, log_path=Path(scratch) / "daphne.log", port=args.port, settings_module=args.settings
        )
        try:
            database_migrate()
            server.start()
            log.info("server on %s (pid %d); registering devices", server.url, server.pid)
            fixture = fixture_create(server.url)
            for target in args.sizes:
                results.append(
                    measure_size(
                        target=target,
                        args=args,
                        fixture=fixture,
                        server=server,
                        pg=pg,
                        bench_url=bench_url,
                        source_url=source_url,
                        bench_name=args.bench_database,
                    )
                )
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"bench-history-daphne-{os.getpid()}.log"
            if server.log_path.exists():
                kept.write_bytes(server.log_path.read_bytes())
                log.error("the server's log is kept in %s", kept)
            raise
        finally:
            server.stop()
            from django.db import connections

            connections.close_all()
            if not args.keep_database:
                database_drop(source_url=source_url, name=args.bench_database)
    wall = time.monotonic() - started
    report = Report(
        command=command,
        machine=machine,
        pg=pg,
        args=args,
        results=results,
        wall_seconds=wall,
        channel_layer=channel_layer,
    )
    sys.stdout.write(report_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(results_json(report), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
