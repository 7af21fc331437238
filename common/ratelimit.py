"""Rate limits: fixed-window counters in Django's cache (Redis in production).

A limit is a setting `E2EE_RATE_LIMITS[name] = "count/period_seconds"`: at most `count` hits per
key (an IP, an account, a device, a connection) in each window of `period_seconds`, the windows
aligned on multiples of the period. The hit that goes over raises `RateLimitedError` (429
`rate_limited`, `extra.retry_after_s`, and the exception handler adds `Retry-After`).

Cost: with RedisCache, one round trip per hit (a pipelined `SET key 0 EX period NX` + `INCR key`);
with the local-memory cache (development, tests) no network at all. A fixed window lets a client
reach twice the count around a window boundary, which is fine for abuse protection.

From async code (the WebSocket gateway) call `aratelimit_hit`: the cache clients are synchronous,
so it runs the hit in a worker thread. Limits on one connection (frames per connection) need no
shared store: `LocalRateLimit` counts them in memory.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest

from common.errors import ApiError


class RateLimitedError(ApiError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; retry later."

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(extra={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: int

    @classmethod
    def parse(cls, value: str) -> Rate:
        count, _, period = value.partition("/")
        rate = cls(count=int(count), period_s=int(period))
        if rate.count < 1 or rate.period_s < 1:
            raise ValueError(f"rate limit {value!r}: count and period must be positive")
        return rate


def rate_get(name: str) -> Rate:
    """The configured rate of limit `name` (a KeyError for an unknown name is a bug)."""
    return Rate.parse(settings.E2EE_RATE_LIMITS[name])


def _cache_incr(key: str, period_s: int) -> int:
    """Count one hit on `key`, which expires after `period_s`; the count after it."""
    if isinstance(cache, RedisCache):
        raw_key = cache.make_and_validate_key(key)
        client = cache._cache.get_client(raw_key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.set(raw_key, 0, ex=period_s, nx=True)
        pipe.incr(raw_key)
        return int(pipe.execute()[1])
    # Other backends: add() is atomic ("create if missing"), incr() too for local memory.
    cache.add(key, 0, timeout=period_s)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=period_s)
        return 1


def _now() -> float:
    return time.time()


_SAFE_KEY = re.compile(r"[A-Za-z0-9._:\[\]-]{1,64}")


def _key_part(key: object) -> str:
    """The key as is when it is short and plain (ids, addresses), else a digest of it."""
    text = str(key)
    return text if _SAFE_KEY.fullmatch(text) else hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def ratelimit_hit(name: str, key: object, *, now: float | None = None) -> None:
    """Count a hit of `key` (anything with a stable str: an IP, a username, a device id) against
    limit `name`; raise `RateLimitedError` once the window's count is exceeded."""
    if not settings.E2EE_RATE_LIMIT_ENABLED:
        return
    rate = rate_get(name)
    now = _now() if now is None else now
    window = int(now // rate.period_s)
    cache_key = f"{settings.E2EE_RATE_LIMIT_PREFIX}:{name}:{_key_part(key)}:{window}"
    # The key outlives its window by a little, so a slow clock step does not reset it early.
    if _cache_incr(cache_key, rate.period_s + 1) > rate.count:
        retry_after = max(1, math.ceil((window + 1) * rate.period_s - now))
        from common.metrics import rate_limited_inc  # metrics imports this module

        rate_limited_inc(name)
        raise RateLimitedError(retry_after)


async def aratelimit_hit(name: str, key: object, *, now: float | None = None) -> None:
    """`ratelimit_hit` for async code (e.g. per WebSocket frame: `aratelimit_hit("ws_frame",
    connection_id)`); the cache call runs in a thread, off the event loop."""
    await sync_to_async(ratelimit_hit, thread_sensitive=False)(name, key, now=now)


class LocalRateLimit:
    """A limit on something that lives in one process, such as one WebSocket connection
    (`LocalRateLimit("ws_frame")` per connection, `.hit()` per frame): the same setting and error
    as `ratelimit_hit`, counted in memory, so no cache round trip and no thread hop per frame.
    Not thread-safe: one per connection, used from its event loop."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.rate = rate_get(name)
        self._clock = clock
        self._window = -1
        self._count = 0

    def hit(self) -> None:
        if not settings.E2EE_RATE_LIMIT_ENABLED:
            return
        now = self._clock()
        window = int(now // self.rate.period_s)
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        if self._count > self.rate.count:
            from common.metrics import rate_limited_inc

            rate_limited_inc(self.name)
            raise RateLimitedError(max(1, math.ceil((window + 1) * self.rate.period_s - now)))


def client_ip(request: HttpRequest | Any) -> str:
    """The client's address: REMOTE_ADDR, or with `E2EE_TRUSTED_PROXY_HOPS` = n > 0 proxies in
    front, the n-th address from the right of X-Forwarded-For (what the nearest trusted proxy
    saw). A header too short to hold that many hops falls back to REMOTE_ADDR."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    hops = int(settings.E2EE_TRUSTED_PROXY_HOPS)
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    forwarded = [part for part in forwarded if part]
    return forwarded[-hops] if len(forwarded) >= hops else remote


def ratelimit_hits(name: str, keys: Sequence[object], *, now: float | None = None) -> list[int | None]:
    """Count one hit for each of `keys` (repeats count repeatedly) against limit `name`, in one
    Redis round trip; for each, None if allowed or the seconds to wait if refused.

    For batched paths (the realtime send batcher): the same limit and windows as `ratelimit_hit`.
    """
    if not settings.E2EE_RATE_LIMIT_ENABLED or not keys:
        return [None] * len(keys)
    rate = rate_get(name)
    now = _now() if now is None else now
    window = int(now // rate.period_s)
    retry_after = max(1, math.ceil((window + 1) * rate.period_s - now))
    cache_keys = [f"{settings.E2EE_RATE_LIMIT_PREFIX}:{name}:{_key_part(key)}:{window}" for key in keys]
    if isinstance(cache, RedisCache):
        raw_keys = [cache.make_and_validate_key(key) for key in cache_keys]
        client = cache._cache.get_client(raw_keys[0], write=True)
        pipe = client.pipeline(transaction=False)
        for raw_key in raw_keys:
            pipe.set(raw_key, 0, ex=rate.period_s + 1, nx=True)
            pipe.incr(raw_key)
        counts = [int(value) for value in pipe.execute()[1::2]]
    else:
        counts = [_cache_incr(key, rate.period_s + 1) for key in cache_keys]
    answers: list[int | None] = []
    for count in counts:
        if count > rate.count:
            from common.metrics import rate_limited_inc  # metrics imports this module

            rate_limited_inc(name)
            answers.append(retry_after)
        else:
            answers.append(None)
    return answers
