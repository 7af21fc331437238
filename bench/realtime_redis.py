"""Moved to `harness.redis_server` (the harness the tests and the benchmarks share). This alias keeps
imports written before the move working until they are updated; nothing new should use it."""

from harness.redis_server import RedisServer, redis_local_pid

__all__ = ["RedisServer", "redis_local_pid"]
