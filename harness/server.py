"""The server under test: daphne serving `config.asgi:application`, as in production."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; the tiny race is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daphne_command() -> list[str]:
    # The daphne of the interpreter running us (the project's venv), not whatever is on PATH.
    script = Path(sys.executable).parent / "daphne"
    return [str(script)] if script.exists() else [sys.executable, "-m", "daphne"]


def process_stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM and wait; SIGKILL if it has not ended within 15 s. Nothing to do if it ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


class DaphneServer:
    """A daphne subprocess on 127.0.0.1, started on enter and stopped (only it) on exit."""

    def __init__(
        self,
        *,
        database_url: str,
        log_path: Path,
        port: int = 0,
        settings_module: str = "config.settings",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # The caller's PYTHONPATH stays after the repository: it may hold an alternative settings module.
        python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self._env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PYTHONPATH": python_path,
            # The benchmark sends far faster than any person: no rate limits.
            "E2EE_RATE_LIMIT_ENABLED": "0",
            **(extra_env or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def start(self, *, timeout: float = 60.0) -> None:
        command = [*_daphne_command(), "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"]
        # Both streams to a file: an unread pipe would block the server once its buffer fills.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as probe:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"daphne exited with {self._process.returncode}; see {self.log_path}")
                try:
                    # Any HTTP answer (here a 404 from the directory) means Django is serving.
                    probe.get("/api/v1/users/bench_probe")
                    return
                except httpx.TransportError:
                    time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not answer within {timeout:.0f} s; see {self.log_path}")

    def restart(self) -> None:
        """A fresh process on the same port (the clients' keep-alive connections reconnect)."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs, sockets drop without a close frame."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=15)

    def stop(self) -> None:
        process, self._process = self._process, None
        process_stop(process)

    def __enter__(self) -> DaphneServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
