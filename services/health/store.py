"""Redis: each service's recent checks and its current status.

Keys (prefix HEALTH_REDIS_PREFIX, default "health:"):
  <prefix>history:<service>   list of check JSON, newest first, capped at HEALTH_HISTORY_SIZE
  <prefix>state:<service>     JSON {status, last_change, last_check}: survives a restart
"""

from __future__ import annotations

import json

import redis.asyncio as redis


class HealthStore:
    def __init__(self, client: redis.Redis, *, prefix: str = "health:", history_size: int = 100):
        self.redis = client
        self.prefix = prefix
        self.history_size = history_size

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "HealthStore":
        return cls(redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3), **kwargs)

    def _history(self, service: str) -> str:
        return f"{self.prefix}history:{service}"

    def _state(self, service: str) -> str:
        return f"{self.prefix}state:{service}"

    async def ping(self) -> None:
        await self.redis.ping()

    async def record(self, states, checks) -> None:
        """One round: each check onto its capped list, each service's state."""
        pipe = self.redis.pipeline(transaction=False)
        for check in checks:
            key = self._history(check.service)
            pipe.lpush(key, json.dumps(check.to_dict()))
            pipe.ltrim(key, 0, self.history_size - 1)
        for state in states:
            pipe.set(self._state(state.target.name), json.dumps({
                "status": state.status, "last_change": state.last_change,
                "last_check": state.last_check.to_dict() if state.last_check else None}))
        await pipe.execute()

    async def load_states(self, services: list[str]) -> dict[str, dict]:
        if not services:
            return {}
        values = await self.redis.mget([self._state(s) for s in services])
        return {s: json.loads(v) for s, v in zip(services, values) if v}

    async def history(self, service: str, limit: int) -> list[dict]:
        if limit <= 0:
            return []
        return [json.loads(v) for v in await self.redis.lrange(self._history(service), 0, limit - 1)]

    async def aclose(self) -> None:
        await self.redis.aclose()
