"""A throwaway redis-server the caller owns (so it can restart it), and a local Redis's pid."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from harness.server import free_port, process_stop


class RedisServer:
    """`redis-server --port P --save '' --appendonly no` on 127.0.0.1: nothing survives a restart."""

    def __init__(self, *, log_path: Path, port: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    def start(self, *, timeout: float = 20.0) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}; see {self.log_path}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        process_stop(process)

    def restart(self) -> None:
        """Stop and start on the same port: every key (channel layer groups, presence) is gone."""
        self.stop()
        self.start()
        self.restarts += 1

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def redis_local_pid(url: str) -> int | None:
    """The pid of the Redis at `url` when it runs on this machine (INFO server), else None."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            info = client.info("server")
        finally:
            client.close()
    except redis.RedisError:
        return None
    pid = int(info.get("process_id", 0))
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None
