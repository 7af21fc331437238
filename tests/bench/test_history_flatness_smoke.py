"""The history-flatness benchmark, at tiny sizes: it runs end to end and its query counts hold.

It needs the production database (PostgreSQL); on SQLite there is nothing to measure. The
benchmark runs in a subprocess against its own database `<DATABASE_URL's name>_bench_smoke`, which
it creates and drops: the suite's test database (pytest-django's) is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from bench.database import database_name

REPO = Path(__file__).resolve().parents[2]
SIZES = (50, 500)


@pytest.mark.slow
@pytest.mark.postgres_only
def test_benchmark_reports_every_size_with_query_counts_independent_of_history(tmp_path: Path) -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the benchmark measures the production setup: it needs DATABASE_URL naming PostgreSQL")
    source_url = os.environ["DATABASE_URL"]
    bench_name = f"{database_name(source_url)}_bench_smoke"
    raw = tmp_path / "results.json"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.history_flatness",
            "--database-url",
            source_url,
            "--bench-database",
            bench_name,
            "--sizes",
            ",".join(map(str, SIZES)),
            "--sends",
            "20",
            "--reads",
            "10",
            "--runs",
            "1",
            "--warmup",
            "3",
            "--json",
            str(raw),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    report = completed.stdout
    assert "| history (messages) | send p50 |" in report
    for size in SIZES:
        assert f"\n| {size:,} | " in report
    results = json.loads(raw.read_text())
    assert [row["target"] for row in results["summary"]] == list(SIZES)
    counts = [row["queries"] for row in results["summary"]]
    # The claim under test: the work per send and per page does not depend on the history.
    for operation in ("send", "page_end", "page_start", "send_request", "page_request"):
        assert len({c[operation] for c in counts}) == 1, (operation, counts)
    assert counts[0]["send"] > 0 and counts[0]["page_end"] == counts[0]["page_start"] >= 1
    assert results["problems"] == []
    for size in results["sizes"]:
        assert size["decrypted_end_page"] == size["sent_in_end_page"] > 0
    with psycopg.connect(source_url, dbname="postgres", autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench_name,)).fetchone()
    assert left is None, f"the benchmark left its database {bench_name} behind"
