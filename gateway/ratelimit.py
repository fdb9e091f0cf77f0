"""Per-key requests-per-minute limit in Redis: a fixed one-minute window per key.

A fixed window is one INCR per request and is shared by every gateway replica; it allows
at most 2x the rate across a window boundary, which is fine for protecting a tutor model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

WINDOW_SEC = 60


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_sec: int  # seconds until the window resets

    def headers(self) -> dict[str, str]:
        # The names OpenAI uses, so SDKs and dashboards that read them work unchanged.
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_sec}s",
        }


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, clock=time.time):
        self.redis = redis
        self.clock = clock

    async def hit(self, key_id: str, limit: int) -> RateDecision:
        now = self.clock()
        window = int(now // WINDOW_SEC)
        counter = f"tutorstack:ratelimit:{key_id}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, WINDOW_SEC * 2)
            count, _ = await pipe.execute()
        reset = max(1, int((window + 1) * WINDOW_SEC - now + 0.999))
        return RateDecision(allowed=count <= limit, limit=limit, remaining=max(0, limit - count), reset_sec=reset)
