"""API-key check and rate limit in one Redis round trip (a Lua script), with a small in-process cache.

The script returns the key's record (or nil once it is revoked) and the request count of the key's
current window. The cache holds parsed, verified records by the record's exact bytes, so a cached
key costs no JSON parse and no HMAC check, yet a revoked or changed record is seen on the very
next request, in every worker: revocation needs no cache expiry. Rate-limit counters live in Redis,
so the limit holds across workers and replicas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.keys import APIKey, APIKeyStore, digest, record_key
from gateway.ratelimit import AUTH_AND_COUNT_LUA, WINDOW_SEC, RateDecision, window_counter

CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Admission:
    key: APIKey
    decision: RateDecision


class Gatekeeper:
    def __init__(self, redis: aioredis.Redis, store: APIKeyStore, clock=time.time):
        self.redis = redis
        self.store = store
        self.clock = clock
        self._script = redis.register_script(AUTH_AND_COUNT_LUA)
        self._cache: dict[str, tuple[bytes, APIKey]] = {}

    async def admit(self, plain_key: str) -> Admission | None:
        """The key and its rate decision, or None for an unknown, revoked or forged key."""
        key_digest = digest(plain_key)
        counter, reset = window_counter(key_digest[:12], self.clock())
        found = await self._script(keys=[record_key(key_digest), counter], args=[WINDOW_SEC * 2])
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
