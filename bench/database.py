"""The benchmark's own PostgreSQL database: create, fill the history fast, describe, drop.

Filling is setup, not measurement: rows go in with COPY, bypassing the server, and look like what
the server stores (random bytes of the real lengths; the server never decrypts or verifies them).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
import psycopg
from psycopg import sql

from bench.machine import process_command, process_parent

POSTGRES_ENGINE = "django.db.backends.postgresql"
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Rows per COPY transaction: big enough to be fast, small enough that the deferred foreign-key
# checks queued until commit stay modest in memory.
FILL_BATCH = 100_000
# Ciphertext lengths of short texts: one to three 64-byte padding blocks plus the 16-byte tag.
CIPHERTEXT_LENGTHS = (80, 144, 208)
# The device lists a sender saw (protocol.md 2.19) of a two-member conversation: 2 + 2 * 45 bytes.
DEVICE_LISTS_LENGTH = 92


class NotPostgresError(ValueError):
    pass


def database_engine(url: str) -> str:
    try:
        return str(dj_database_url.parse(url)["ENGINE"])
    except Exception as exc:
        raise NotPostgresError(f"cannot parse database URL: {exc}") from exc


def require_postgres(url: str) -> None:
    engine = database_engine(url)
    if engine != POSTGRES_ENGINE:
        raise NotPostgresError(
            f"this benchmark measures the production setup and needs PostgreSQL; the URL names {engine}. "
            "Pass --database-url postgresql://user@host:port/name (SQLite is not supported)."
        )


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def with_database_name(url: str, name: str) -> str:
    """The same server, user and options, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def redact(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_bench_name(*, source_url: str, name: str) -> None:
    # We DROP this database: never let it be the one the caller named, or anything odd.
    if not _SAFE_NAME.match(name):
        raise ValueError(f"bench database name {name!r} must match {_SAFE_NAME.pattern}")
    if "bench" not in name:
        raise ValueError(f"bench database name {name!r} must contain 'bench' (it is dropped and re-created)")
    if name == database_name(source_url):
        raise ValueError(f"refusing to use the database named in DATABASE_URL ({name}) as the bench database")


@contextmanager
def admin_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the server's maintenance database (for CREATE/DROP DATABASE)."""
    try:
        conn = psycopg.connect(url, dbname="postgres", autocommit=True, connect_timeout=10)
    except psycopg.OperationalError:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)  # no `postgres` database
    try:
        yield conn
    finally:
        conn.close()


def database_recreate(*, source_url: str, name: str) -> None:
    check_bench_name(source_url=source_url, name=name)
    with admin_connection(source_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(*, source_url: str, name: str) -> None:
    check_bench_name(source_url=source_url, name=name)
    with admin_connection(source_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class PostgresInfo:
    version: str
    settings: dict[str, str]
    postmaster_pid: int | None  # set when the server runs on this machine and /proc shows it

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "settings": self.settings, "postmaster_pid": self.postmaster_pid}


def postgres_describe(url: str) -> PostgresInfo:
    with psycopg.connect(url, autocommit=True) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        settings = {
            name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
            for name in ("shared_buffers", "work_mem", "fsync", "synchronous_commit", "max_connections")
        }
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        postmaster: int | None = None
        host = conn.info.host
        if host.startswith("/") or host in ("localhost", "127.0.0.1", "::1"):
            try:
                parent = process_parent(backend)
                if "postgres" in process_command(parent) or Path(f"/proc/{parent}/exe").resolve().name == "postgres":
                    postmaster = parent
            except OSError:
                postmaster = None  # another container or no /proc: server CPU is not measurable
    return PostgresInfo(version=version, settings=settings, postmaster_pid=postmaster)


def database_settle(url: str) -> None:
    """Leave the database as autovacuum would in steady state, then flush dirty pages.

    After a bulk COPY the table has no statistics and no visibility map; autovacuum would fix
    that at an unpredictable moment, maybe in the middle of a measurement. Doing it now, and a
    checkpoint after it, keeps background work out of the timed part.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) messaging_message")
        conn.execute("VACUUM (ANALYZE) conversations_conversation")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # not a superuser (nor pg_checkpoint): the next timed checkpoint does it


@dataclass(frozen=True)
class FillResult:
    rows: int
    seconds: float
    last_seq: int


_COPY = sql.SQL(
    "COPY messaging_message (conversation_id, seq, version, epoch, sender_device_id, client_message_id, "
    "nonce, ciphertext, signature, device_lists, created_at) FROM STDIN"
)


def _copy_lines(
    *, conversation_id: uuid.UUID, senders: Sequence[uuid.UUID], epoch: int, first: int, last: int, start: datetime
) -> Iterator[str]:
    """COPY text-format lines for seq first..last; bytea as \\x hex, one random draw per chunk."""
    conversation = str(conversation_id)
    sender_texts = [str(s) for s in senders]
    chunk = 5_000
    for chunk_first in range(first, last + 1, chunk):
        chunk_last = min(chunk_first + chunk - 1, last)
        lines = []
        for seq in range(chunk_first, chunk_last + 1):
            ciphertext_len = CIPHERTEXT_LENGTHS[seq % len(CIPHERTEXT_LENGTHS)]
            raw = os.urandom(16 + 12 + ciphertext_len + 64 + DEVICE_LISTS_LENGTH)
            client_message_id, nonce = raw[:16], raw[16:28]
            ciphertext = raw[28 : 28 + ciphertext_len]
            signature = raw[28 + ciphertext_len : 28 + ciphertext_len + 64]
            device_lists = raw[28 + ciphertext_len + 64 :]
            # created_at increases with seq, as it does when the server appends.
            created_at = (start + timedelta(microseconds=seq - first)).isoformat()
            lines.append(
                f"{conversation}\t{seq}\t1\t{epoch}\t{sender_texts[seq % len(sender_texts)]}"
                f"\t\\\\x{client_message_id.hex()}\t\\\\x{nonce.hex()}\t\\\\x{ciphertext.hex()}"
                f"\t\\\\x{signature.hex()}\t\\\\x{device_lists.hex()}\t{created_at}\n"
            )
        yield "".join(lines)


def history_fill(
    url: str, *, conversation_id: uuid.UUID, senders: Sequence[uuid.UUID], epoch: int, upto: int
) -> FillResult:
    """Append messages until the conversation's `last_seq` is `upto` (nothing if it already is).

    Each batch takes the conversation row lock like a send does, appends after `last_seq`, and
    advances `last_seq` in the same transaction, so the log stays gap-free and a send racing the
    fill would simply come after it.
    """
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(url) as conn:
        while True:
            with conn.transaction():
                row = conn.execute(
                    "SELECT last_seq FROM conversations_conversation WHERE id = %s FOR UPDATE", (conversation_id,)
                ).fetchone()
                if row is None:
                    raise LookupError(f"no conversation {conversation_id}")
                last_seq = int(row[0])
                if last_seq >= upto:
                    return FillResult(rows=rows, seconds=time.perf_counter() - started, last_seq=last_seq)
                first, last = last_seq + 1, min(last_seq + FILL_BATCH, upto)
                with conn.cursor().copy(_COPY) as copy:
                    for block in _copy_lines(
                        conversation_id=conversation_id,
                        senders=senders,
                        epoch=epoch,
                        first=first,
                        last=last,
                        start=datetime.now(UTC),
                    ):
                        copy.write(block)
                conn.execute(
                    "UPDATE conversations_conversation SET last_seq = %s WHERE id = %s", (last, conversation_id)
                )
                rows += last - first + 1
