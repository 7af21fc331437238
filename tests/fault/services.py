"""The fault suite's own servers: a PostgreSQL cluster, a Redis, two daphne processes, a Celery
worker and a Celery beat, each on a free loopback port in one temporary directory, each killable and restartable.

Nothing here touches the shared services of the development machine or CI: the suite restarts
PostgreSQL and Redis, so it owns them. `Stack` starts everything and stops everything it started,
also when a start fails half way (no orphan process or server is left behind).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType

import psycopg
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from harness.redis_server import RedisServer
from harness.server import REPO, DaphneServer, free_port, process_stop

NOTIFY_RETRY_BASE_S = 5.0  # the first retry of a wake-up comes 0 to 5 s after the failed attempt
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory with initdb and pg_ctl, if any."""
    for directory in PG_BIN_DIRS:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def missing_binaries() -> list[str]:
    missing = [] if postgres_bin() is not None else ["PostgreSQL (initdb, pg_ctl)"]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (PostgreSQL refuses to run as root)")
    return missing


class PostgresCluster:
    """A throwaway cluster (trust auth, fsync off) that `restart_immediate` crashes and restarts."""

    def __init__(self, root: Path) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bindir = bindir
        self.root = root / "postgres"  # owned by the server's user: its data, log and socket
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/e2ee"
        self.restarts = 0

    def _run(self, *argv: str, timeout: float = 90) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # as .ci/run does: the cluster belongs to the postgres user
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} {argv[1:]} failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        self.root.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "-o", options, "start")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE e2ee")

    def restart_immediate(self) -> None:
        """`pg_ctl -m immediate restart`: every backend dies without a goodbye (a crash), the
        server recovers and accepts connections again before this returns."""
        # With its log file named again: else the new server writes to (and holds open) our pipe.
        log = str(self.log_path)
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "immediate", "-w", "-t", "60", "restart")
        self.restarts += 1

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


class KillableRedis(RedisServer):
    """bench's throwaway redis-server, plus SIGKILL: no shutdown, every key lost on restart."""

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        process, self._process = self._process, None
        if process is not None:
            process.wait(timeout=15)

    def restart(self) -> None:
        self.start()
        self.restarts += 1


class CeleryProcess:
    """`celery -A config worker` (solo pool) or `celery -A config beat`, as production runs them
    (README, Production setup), on the stack's database and broker."""

    def __init__(self, *, role: str, env: dict[str, str], log_path: Path) -> None:
        self.role = role
        self._env = env
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # an earlier worker's lines
        command = [sys.executable, "-m", "celery", "-A", "config", self.role, "-l", "INFO"]
        if self.role == "worker":
            command += ["--pool=solo", "-c", "1", "--without-gossip", "--without-mingle"]
            ready = b" ready."
        else:
            command += ["--schedule", str(self.log_path.with_suffix(".schedule"))]
            ready = b"beat: Starting..."
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"celery {self.role} exited with {self._process.returncode}; see {self.log_path}")
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if ready in log.read():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"celery {self.role} was not ready within {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: whatever task it holds is neither finished nor handed back."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=15)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        process, self._process = self._process, None
        process_stop(process)


class Stack:
    """PostgreSQL, Redis, two daphne processes and a worker; `close` stops whatever runs."""

    def __init__(self, *, logs_to: Path | None = None) -> None:
        self.logs_to = logs_to  # where the servers' logs are copied on close
        self.root = Path(tempfile.mkdtemp(prefix="e2ee-fault-"))
        self.root.chmod(0o755)  # the postgres user writes its log and socket here
        self.metrics_dir = self.root / "metrics"
        self.metrics_dir.mkdir()
        self.postgres = PostgresCluster(self.root)
        self.redis = KillableRedis(log_path=self.root / "redis.log")
        self.daphnes: list[DaphneServer] = []
        self.worker: CeleryProcess | None = None
        self.beat: CeleryProcess | None = None
        self._stopped: set[int] = set()  # indexes of daphnes under SIGSTOP

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "E2EE_CELERY_BROKER_URL": self.redis.url,
            "E2EE_RATE_LIMIT_ENABLED": "1",  # production behaviour, limits included
            # Counters summed over every process, killed ones included (common/metrics.py).
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # Wake-ups to a receiver on loopback, soon after a message, retried within seconds.
            "E2EE_NOTIFY_ALLOW_PRIVATE_URLS": "1",
            "E2EE_NOTIFY_COALESCE_S": "0.5",
            "E2EE_NOTIFY_RETRY_BASE_S": str(NOTIFY_RETRY_BASE_S),
            "E2EE_NOTIFY_HTTP_TIMEOUT_S": "3",
        }

    def start(self) -> None:
        try:
            self.postgres.start()
            self.redis.start()
            env = {**os.environ, **self.env()}
            python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
            env["PYTHONPATH"] = python_path
            env.pop("DJANGO_SETTINGS_MODULE", None)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=REPO,
                env=env,
                check=True,
                timeout=180,
            )
            for index in range(2):
                server = DaphneServer(
                    database_url=self.postgres.url,
                    log_path=self.root / f"daphne-{index}.log",
                    extra_env=self.env(),
                )
                self.daphnes.append(server)
                server.start()
            self.worker = CeleryProcess(role="worker", env=env, log_path=self.root / "worker.log")
            self.worker.start()
            self.beat = CeleryProcess(role="beat", env=env, log_path=self.root / "beat.log")
            self.beat.start()
        except BaseException:
            self.close()
            raise

    # -- faults ----------------------------------------------------------------------------------

    def daphne_kill_and_restart(self, index: int) -> None:
        """SIGKILL (a crash: no close frames), then a fresh process on the same port."""
        server = self.daphnes[index]
        self.daphne_resume(index)
        server.kill()
        server.start()

    def daphne_pause(self, index: int) -> None:
        os.kill(self.daphnes[index].pid, signal.SIGSTOP)
        self._stopped.add(index)

    def daphne_resume(self, index: int) -> None:
        if index in self._stopped:
            self._stopped.discard(index)
            try:
                os.kill(self.daphnes[index].pid, signal.SIGCONT)
            except (ProcessLookupError, RuntimeError):
                pass

    def redis_kill(self) -> None:
        self.redis.kill()

    def redis_restart(self) -> None:
        """On the same port, empty: channel-layer subscriptions, presence and counters are gone."""
        self.redis.restart()

    def postgres_restart(self) -> None:
        self.postgres.restart_immediate()

    # -- observations ----------------------------------------------------------------------------

    def server_errors(self) -> list[tuple[float, str, int]]:
        """What the daphne processes failed, from their logs: (wall clock, "http_5xx", 1) per HTTP
        answer >= 500 and (wall clock, "ws_send_failed", sends) per batch of WebSocket sends that
        failed (each send answered `internal_error`)."""
        found: list[tuple[float, str, int]] = []
        for index in range(len(self.daphnes)):
            path = self.root / f"daphne-{index}.log"
            for line in path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "ts" not in record:
                    continue
                at = datetime.fromisoformat(record["ts"]).timestamp()
                status = record.get("status")
                if isinstance(status, int) and status >= 500:
                    found.append((at, "http_5xx", 1))
                elif record.get("msg") == "send batch failed":
                    found.append((at, "ws_send_failed", int(record.get("batch", 1))))
        return sorted(found)

    def counters(self) -> dict[str, float]:
        """Every counter of every server process so far: `name{label=value,...}` -> total."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        totals: dict[str, float] = {}
        for metric in registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    key = f"{sample.name}{{{labels}}}"
                    totals[key] = totals.get(key, 0.0) + sample.value
        return totals

    def redis_alive(self) -> bool:
        client = redis.Redis.from_url(self.redis.url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def close(self) -> None:
        """Stop everything (a paused process is resumed first so that it can end)."""
        for index in list(self._stopped):
            self.daphne_resume(index)
        for celery in (self.beat, self.worker):
            if celery is not None:
                celery.stop()
        for server in self.daphnes:
            server.stop()
        if self.redis._process is not None:
            self.redis.stop()
        try:
            self.postgres.stop()
        finally:
            if self.logs_to is not None:
                for log in self.root.rglob("*.log"):
                    shutil.copy(log, self.logs_to / log.name)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
