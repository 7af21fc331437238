"""The first Quick start command, run as a newcomer would: it starts a real server (daphne, SQLite,
in-memory layer) and the scripted demo decrypts every message on every device."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_script_runs_end_to_end_and_every_device_decrypts() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DEMO_EXIT="1", PORT=str(_free_port()), E2EE_SKIP_INSTALL="1")
    assert Path(sys.prefix, "bin", "python").exists()
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "UNDECRYPTABLE" not in out
    # Every device's view shows the messages it is entitled to, decrypted.
    assert out.count("alice: Hi bob, this is alice on my laptop.") == 3
    assert out.count("carol: Glad to be here.") == 3
    assert out.count("alice: Lunch on Friday?") == 3
    # Live over WebSockets: both online members get the phone's message, and their delivery and
    # read receipts come back to the sender.
    live = out.split("live over WebSockets")[1].split("what the server stored")[0]
    assert live.count("received live: #4 alice: Anyone up for a call tonight?") == 2
    assert "bob delivered up to #4, read up to #4" in live
    assert "carol delivered up to #4, read up to #4" in live
    assert "ciphertext " in out and "result: bad_signature" in out
    assert "Hi bob" not in out.split("what the server stored")[1].split("a tampered envelope")[0]
