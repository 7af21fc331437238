"""Moved to `harness.server` (the harness the tests and the benchmarks share). This alias keeps
imports written before the move working until they are updated; nothing new should use it."""

from harness.server import REPO, DaphneServer, free_port, process_stop

__all__ = ["REPO", "DaphneServer", "free_port", "process_stop"]
