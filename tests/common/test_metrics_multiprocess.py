"""With PROMETHEUS_MULTIPROC_DIR, /metrics in any process reports the sum over all processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

INCREMENT = """
import django
django.setup()
from common.metrics import messages_sent_inc
messages_sent_inc({n})
"""

SCRAPE = """
import django
django.setup()
from django.test import RequestFactory
from common.metrics import metrics_view
print(metrics_view(RequestFactory().get("/metrics")).content.decode())
"""


def _run(code: str, multiproc_dir: Path) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def test_counters_of_several_processes_are_summed(tmp_path: Path) -> None:
    _run(INCREMENT.format(n=3), tmp_path)
    _run(INCREMENT.format(n=4), tmp_path)
    text = _run(SCRAPE, tmp_path)
    assert 'e2ee_messages_sent_total{transport="rest"} 7.0' in text
