"""A PostgreSQL or Redis server of a test's own, on its own port and data directory, that the
test may restart at will (the shared servers of the suite are never restarted).

PostgreSQL needs its binaries (/usr/lib/postgresql/<version>/bin) and, when the tests run as
root, the `postgres` user to run them as (initdb refuses root), as `.ci/run` does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.server import REPO, free_port


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


def postgres_missing() -> str | None:
    """Why a private PostgreSQL cannot run here (a skip reason), or None."""
    if _postgres_bin() is None:
        return "no PostgreSQL binaries under /usr/lib/postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run PostgreSQL as"
    return None


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else "no redis-server on PATH"


class PostgresServer:
    """initdb + pg_ctl in `directory`, trust authentication, listening on 127.0.0.1:`port`.

    The directory must be reachable by the `postgres` user: not under pytest's tmp_path, which is
    private to root (running_postgres makes one under the system's temporary directory)."""

    def __init__(self, directory: Path) -> None:
        bin_dir = _postgres_bin()
        assert bin_dir is not None, postgres_missing()
        self.bin = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{part}'" for part in command)]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout.decode(errors='replace')}")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            self.directory.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w", "-o", options, "start"
        )

    def restart_immediate(self) -> None:
        """What a crash and a supervisor's restart look like to clients: every backend is killed
        without a goodbye, then the server accepts connections again (pg_ctl -w waits for that)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.start()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def createdb(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh cluster, started; stopped and deleted on exit."""
    directory = Path(tempfile.mkdtemp(prefix="e2ee-test-pg-"))
    server = PostgresServer(directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop()
        except RuntimeError:
            pass  # never started, or already stopped
        shutil.rmtree(directory, ignore_errors=True)


class RedisServer:
    """redis-server on 127.0.0.1:`port`, no persistence, its files in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory)]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: clients see their sockets drop, as in a crash."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def database_only_env() -> dict[str, str]:
    """This process's environment without Redis or a broker: for servers of tests about the
    database alone (readiness then skips its Redis check)."""
    return {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "E2EE_CELERY_BROKER_URL")}


@contextmanager
def running_migrated_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own with the database `e2ee` created and migrated."""
    with running_postgres() as server:
        server.createdb("e2ee")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=REPO,
            env={**database_only_env(), "DATABASE_URL": server.database_url("e2ee")},
            check=True,
            timeout=300,
        )
        yield server
