"""The realtime load benchmark in its `--quick` form: it runs end to end, loses nothing, and its
idle mode measures memory per connection.

PostgreSQL only, like the other benchmark smoke test: the benchmark works in its own database
`<DATABASE_URL's name>_rtbench_smoke`, which it creates and drops. With REDIS_URL it runs two server
processes on one Redis channel layer, without it one process on the in-memory layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from bench.database import database_name

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the benchmark measures the production setup: it needs DATABASE_URL naming PostgreSQL")
    source_url = os.environ["DATABASE_URL"]
    redis_url = os.environ.get("REDIS_URL", "")
    bench_name = f"{database_name(source_url)}_rtbench_smoke"
    raw = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "bench.realtime_load",
        "--database-url",
        source_url,
        "--bench-database",
        bench_name,
        "--quick",
        "--json",
        str(raw),
        "--quiet",
        *extra,
    ]
    command += ["--redis-url", redis_url, "--server-processes", "2"] if redis_url else ["--server-processes", "1"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    with psycopg.connect(source_url, dbname="postgres", autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench_name,)).fetchone()
    assert left is None, f"the benchmark left its database {bench_name} behind"
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-4000:]
    return completed, json.loads(raw.read_text())


@pytest.mark.slow
@pytest.mark.postgres_only
def test_load_benchmark_delivers_every_message_and_reports_latency_and_cpu(tmp_path: Path) -> None:
    completed, results = _run(tmp_path)

    assert "| offered msg/s | run | accepted msg/s |" in completed.stdout
    assert results["problems"] == []
    [run] = results["runs"]
    assert run["accepted"] > 0 and run["delivered"] > 0
    assert run["lost"] == 0 and run["complete"] is True
    assert run["expected_deliveries"] == 3 * run["offered"]
    assert run["stats"]["decrypt_failures"] == 0
    assert run["latency_ms"]["p50"] > 0
    assert run["cpu"]["daphne"] is not None and run["cpu"]["daphne"] > 0


@pytest.mark.slow
@pytest.mark.postgres_only
def test_idle_benchmark_reports_memory_per_connection(tmp_path: Path) -> None:
    completed, results = _run(tmp_path, "--idle", "20,40")

    assert "| idle connections | daphne RSS MiB |" in completed.stdout
    assert [step["connections"] for step in results["idle"]] == [20, 40]
    assert all(step["rss_mib"] > 0 for step in results["idle"])
