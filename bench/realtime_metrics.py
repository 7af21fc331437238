"""Moved to `harness.metrics` (the harness the tests and the benchmarks share). This alias keeps
imports written before the move working until they are updated; nothing new should use it."""

from harness.metrics import SendPoint, latencies_ms, percentile, send_points

__all__ = ["SendPoint", "latencies_ms", "percentile", "send_points"]
