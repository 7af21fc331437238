"""Who is online, and who is typing: short-lived state in Redis with expiry, never the database.

A user is online while any of their devices holds an authenticated connection. Each connection
is a member of the sorted set `e2ee:presence:<user id>` scored by its expiry time; every server
process refreshes its own connections every heartbeat, so a process that dies without cleaning
up drops out after `PRESENCE_TTL_HEARTBEATS` heartbeats. Without Redis (the embedded setup,
one process) the same structure lives in this process's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from django.conf import settings

from common.loops import PerLoop

logger = logging.getLogger(__name__)

PRESENCE_TTL_HEARTBEATS = 3
TYPING_TTL_S = 6.0


class PresenceStore(Protocol):
    async def connect(self, user_id: int, connection: str) -> bool:
        """Record a connection; True if the user was offline before."""

    async def disconnect(self, user_id: int, connection: str) -> bool:
        """Forget a connection; True if the user has none left."""

    async def refresh(self, entries: Iterable[tuple[int, str]]) -> None:
        """Push back the expiry of these live connections."""

    async def online(self, user_ids: Iterable[int]) -> set[int]:
        """The subset of `user_ids` that is online now."""

    async def typing(self, conversation_id: str, device_id: str, started: bool) -> None:
        """Record (or clear) a typing indicator that expires on its own."""


def _ttl() -> float:
    return float(settings.E2EE_WS_HEARTBEAT_S * PRESENCE_TTL_HEARTBEATS)


def presence_connection(device_id: uuid.UUID, channel_name: str) -> str:
    """The presence entry of one connection: the device's id, then the connection's channel. A
    user is online while any entry is live; a device is connected while an entry of its own is."""
    return f"{device_id.hex}/{channel_name}"


# Every live connection of this process's MemoryPresence stores, whatever loop made them, with its
# expiry: what `devices_connected` reads without Redis (one process, eager background tasks).
_memory_connections: dict[str, float] = {}
_sync_redis: Any = None


class MemoryPresence:
    def __init__(self) -> None:
        self._connections: dict[int, dict[str, float]] = {}
        self._typing: dict[tuple[str, str], float] = {}

    def _live(self, user_id: int, now: float) -> dict[str, float]:
        entries = self._connections.get(user_id, {})
        for connection in [c for c, expiry in entries.items() if expiry <= now]:
            del entries[connection]
        return entries

    async def connect(self, user_id: int, connection: str) -> bool:
        now = time.time()
        entries = self._live(user_id, now)
        was_offline = not entries
        entries[connection] = _memory_connections[connection] = now + _ttl()
        self._connections[user_id] = entries
        return was_offline

    async def disconnect(self, user_id: int, connection: str) -> bool:
        entries = self._live(user_id, time.time())
        entries.pop(connection, None)
        _memory_connections.pop(connection, None)
        if not entries:
            self._connections.pop(user_id, None)
        return not entries

    async def refresh(self, entries: Iterable[tuple[int, str]]) -> None:
        expiry = time.time() + _ttl()
        for user_id, connection in entries:
            self._connections.setdefault(user_id, {})[connection] = expiry
            if connection in _memory_connections:
                _memory_connections[connection] = expiry

    async def online(self, user_ids: Iterable[int]) -> set[int]:
        now = time.time()
        return {user_id for user_id in user_ids if self._live(user_id, now)}

    async def typing(self, conversation_id: str, device_id: str, started: bool) -> None:
        key = (conversation_id, device_id)
        if started:
            self._typing[key] = time.time() + TYPING_TTL_S
        else:
            self._typing.pop(key, None)


class RedisPresence:
    def __init__(self, url: str) -> None:
        import redis.asyncio

        self._redis: Any = redis.asyncio.Redis.from_url(url)

    @staticmethod
    def _key(user_id: int) -> str:
        return f"e2ee:presence:{user_id}"

    async def connect(self, user_id: int, connection: str) -> bool:
        now = time.time()
        key = self._key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            pipe.zadd(key, {connection: now + _ttl()})
            pipe.expire(key, int(_ttl()) + 1)
            _, before, _, _ = await pipe.execute()
        return int(before) == 0

    async def disconnect(self, user_id: int, connection: str) -> bool:
        key = self._key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(key, connection)
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.zcard(key)
            _, _, after = await pipe.execute()
        return int(after) == 0

    async def refresh(self, entries: Iterable[tuple[int, str]]) -> None:
        expiry = time.time() + _ttl()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, connection in entries:
                pipe.zadd(self._key(user_id), {connection: expiry})
                pipe.expire(self._key(user_id), int(_ttl()) + 1)
            await pipe.execute()

    async def online(self, user_ids: Iterable[int]) -> set[int]:
        ids = list(user_ids)
        if not ids:
            return set()
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.zcount(self._key(user_id), f"({now}", "+inf")
            counts = await pipe.execute()
        return {user_id for user_id, count in zip(ids, counts, strict=True) if int(count) > 0}

    async def typing(self, conversation_id: str, device_id: str, started: bool) -> None:
        key = f"e2ee:typing:{conversation_id}:{device_id}"
        if started:
            await self._redis.set(key, b"1", px=int(TYPING_TTL_S * 1000))
        else:
            await self._redis.delete(key)


class PresenceRegistry:
    """This process's authenticated connections, refreshed in Redis by one task for all of them
    (one pipeline per heartbeat, not one timer per connection: idle sockets stay cheap)."""

    def __init__(self, store: PresenceStore) -> None:
        self.store = store
        self._local: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def connect(self, user_id: int, connection: str) -> bool:
        self._local[connection] = user_id
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        return await self.store.connect(user_id, connection)

    async def disconnect(self, user_id: int, connection: str) -> bool:
        self._local.pop(connection, None)
        return await self.store.disconnect(user_id, connection)

    async def _heartbeat(self) -> None:
        while self._local:
            await asyncio.sleep(settings.E2EE_WS_HEARTBEAT_S)
            try:
                await self.store.refresh([(user_id, c) for c, user_id in self._local.items()])
            except Exception:  # Redis restarting: the next heartbeat retries
                logger.warning("presence refresh failed", exc_info=True)


def _new_registry() -> PresenceRegistry:
    url = settings.REDIS_URL
    return PresenceRegistry(RedisPresence(url) if url else MemoryPresence())


_registry: PerLoop[PresenceRegistry] = PerLoop(_new_registry)


def presence_registry() -> PresenceRegistry:
    """The registry of the running event loop (one per process under daphne)."""
    return _registry.get()


def devices_connected(devices: Iterable[tuple[int, uuid.UUID]]) -> set[uuid.UUID]:
    """Which of these (user id, device id) pairs hold a live connection to any server process.

    Synchronous, for background workers: with Redis one pipelined read per batch (the users'
    live entries); without Redis this process's connections (the embedded setup runs its
    background tasks eagerly, in the server process).
    """
    pairs = list(devices)
    if not pairs:
        return set()
    now = time.time()
    if not settings.REDIS_URL:
        live = [c for c, expiry in list(_memory_connections.items()) if expiry > now]
        prefixes = {c.split("/", 1)[0] for c in live}
        return {device_id for _, device_id in pairs if device_id.hex in prefixes}
    global _sync_redis
    if _sync_redis is None:
        import redis

        _sync_redis = redis.Redis.from_url(settings.REDIS_URL)
    users = sorted({user_id for user_id, _ in pairs})
    with _sync_redis.pipeline(transaction=False) as pipe:
        for user_id in users:
            pipe.zrangebyscore(RedisPresence._key(user_id), f"({now}", "+inf")
        results = pipe.execute()
    prefixes = {bytes(member).split(b"/", 1)[0].decode("ascii", "replace") for members in results for member in members}
    return {device_id for _, device_id in pairs if device_id.hex in prefixes}
