"""Redis: practice sessions per trainee, and the runtime engine override.

Keys:
  practice:session:<session_id>        JSON of the session (persona, engine, turns with intents, scores)
  practice:sessions:<user_id>          sorted set of session ids by last update (newest first when listed)
  <engine_override_key>                "rules" | "llm" | absent: the engine for everyone, read per request
"""

from __future__ import annotations

import json
import time

import redis.asyncio as redis

SESSION_KEY = "practice:session:{}"
USER_SESSIONS_KEY = "practice:sessions:{}"


class PracticeStore:
    def __init__(self, client: redis.Redis, *, override_key: str, per_user: int = 200, ttl_days: int = 180,
                 override_cache_sec: float = 0.5):
        self.redis = client
        self.override_key = override_key
        self.per_user = per_user
        self.ttl = ttl_days * 86400
        self.override_cache_sec = override_cache_sec
        self._override: tuple[float, str | None] = (0.0, None)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "PracticeStore":
        return cls(redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3), **kwargs)

    async def ping(self) -> None:
        await self.redis.ping()

    async def engine_override(self) -> str | None:
        """The runtime setting (cached for half a second, so a switch applies within a second)."""
        fetched_at, value = self._override
        if time.monotonic() - fetched_at > self.override_cache_sec:
            try:
                value = await self.redis.get(self.override_key) or None
            except redis.RedisError:
                value = self._override[1]  # Redis hiccup: keep the last known setting
            self._override = (time.monotonic(), value)
        return value

    async def set_engine_override(self, value: str | None) -> None:
        if value:
            await self.redis.set(self.override_key, value)
        else:
            await self.redis.delete(self.override_key)
        self._override = (0.0, None)

    async def get_session(self, session_id: str) -> dict | None:
        raw = await self.redis.get(SESSION_KEY.format(session_id))
        return json.loads(raw) if raw else None

    async def save_session(self, session: dict) -> None:
        user_key = USER_SESSIONS_KEY.format(session["user_id"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(SESSION_KEY.format(session["session_id"]), json.dumps(session, ensure_ascii=False), ex=self.ttl)
            pipe.zadd(user_key, {session["session_id"]: session["updated_at"]})
            pipe.zremrangebyrank(user_key, 0, -self.per_user - 1)
            pipe.expire(user_key, self.ttl)
            await pipe.execute()

    async def list_sessions(self, user_id: str, limit: int = 50) -> list[dict]:
        ids = await self.redis.zrevrange(USER_SESSIONS_KEY.format(user_id), 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([SESSION_KEY.format(i) for i in ids])
        return [json.loads(raw) for raw in raws if raw]

    async def aclose(self) -> None:
        await self.redis.aclose()
