"""API-key check and rate limit in one Redis round trip (a Lua script), with a small in-process cache.

The script returns the key's record (or nil once it is revoked) and the request count of the key's
current window. The cache holds parsed, verified records by the record's exact bytes, so a cached
key costs no JSON parse and no HMAC check, yet a revoked or changed record is seen on the very
next request, in every worker: revocation needs no cache expiry. Rate-limit counters live in Redis,
so the limit holds across workers and replicas.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.keys import APIKey, APIKeyStore, digest, record_key
from gateway.redis_pipe import PipelinedRedis
from gateway.ratelimit import AUTH_AND_COUNT_LUA, WINDOW_SEC, RateDecision, window_counter

CACHE_MAX_ENTRIES = 10_000
# A key check that Redis does not answer within this time fails (503 key_store_unavailable), as redis-py's
# own socket timeout (5 s by default) made it fail before the gateway's client was built without one.
REDIS_TIMEOUT_SEC = 5.0


class CallWatchdog:
    """Bounds calls in time with one periodic check for all the calls in flight, instead of a timer per call:
    redis-py's socket timeout costs a task and two loop timers per command, on every request here. A call
    past `timeout` is cancelled and raises redis' TimeoutError (within timeout + period)."""

    def __init__(self, timeout: float = REDIS_TIMEOUT_SEC, period: float | None = None):
        self.timeout = timeout
        self.period = period or max(0.02, timeout / 10)
        self._calls: dict[int, list] = {}  # id -> [task, started, expired]
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, awaitable):
        task = asyncio.current_task()
        cancelling = task.cancelling()
        entry = [task, time.monotonic(), False]
        self._calls[id(entry)] = entry
        loop = asyncio.get_running_loop()
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._handle = loop.call_later(self.period, self._tick)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if entry[2] and task.uncancel() <= cancelling:
                raise RedisTimeoutError(f"Redis did not answer within {self.timeout:g}s") from None
            raise
        finally:
            del self._calls[id(entry)]

    def _tick(self) -> None:
        self._handle = None
        if not self._calls:
            return  # idle: the next call starts the checks again
        now = time.monotonic()
        for entry in list(self._calls.values()):
            if not entry[2] and now - entry[1] >= self.timeout:
                entry[2] = True
                entry[0].cancel()
        self._handle = self._loop.call_later(self.period, self._tick)


@dataclass(frozen=True)
class Admission:
    key: APIKey
    decision: RateDecision


class Gatekeeper:
    def __init__(self, redis: aioredis.Redis, store: APIKeyStore, clock=time.time, pipe: PipelinedRedis | None = None):
        self.redis = redis
        self.pipe = pipe  # the auto-pipelined connection for the key check (gateway/redis_pipe.py); else redis-py
        self.store = store
        self.clock = clock
        self._script = redis.register_script(AUTH_AND_COUNT_LUA)
        self._cache: dict[str, tuple[bytes, APIKey]] = {}
        self.watchdog = CallWatchdog()

    async def admit(self, plain_key: str) -> Admission | None:
        """The key and its rate decision, or None for an unknown, revoked or forged key."""
        key_digest = digest(plain_key)
        counter, reset = window_counter(key_digest[:12], self.clock())
        keys, args = [record_key(key_digest), counter], [WINDOW_SEC * 2]
        if self.pipe is not None:
            try:
                found = await self.watchdog.run(self.pipe.evalsha(self._script.sha, AUTH_AND_COUNT_LUA, keys, args))
            except RedisTimeoutError:
                self.pipe.reset()  # a connection that stopped answering is not waited on by the next requests
                raise
        else:
            found = await self.watchdog.run(self._script(keys=keys, args=args))
        if not found:
            self._cache.pop(key_digest, None)
            return None
        raw, count = found
        cached = self._cache.get(key_digest)
        if cached is not None and cached[0] == raw:
            key = cached[1]
        else:
            key = self.store.parse(raw, key_digest)
            if key is None:
                return None
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key_digest] = (raw, key)
        count = int(count)
        decision = RateDecision(allowed=count <= key.rpm, limit=key.rpm, remaining=max(0, key.rpm - count),
                                reset_sec=reset)
        return Admission(key, decision)
