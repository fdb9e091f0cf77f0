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
        counter, reset = window_counter(key_id, self.clock())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, WINDOW_SEC * 2)
            count, _ = await pipe.execute()
        return RateDecision(allowed=count <= limit, limit=limit, remaining=max(0, limit - count), reset_sec=reset)


# One round trip per request: read the key's record and count the request in the key's window.
# KEYS[1] the key's record, KEYS[2] the window's counter; ARGV[1] the counter's TTL.
# Returns nil for an unknown (or revoked) key, which is then not counted.
AUTH_AND_COUNT_LUA = """
local record = redis.call('GET', KEYS[1])
if not record then return false end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {record, count}
"""


def window_counter(key_id: str, now: float) -> tuple[str, int]:
    """The counter of the window `now` falls in, and the seconds until that window resets."""
    window = int(now // WINDOW_SEC)
    return f"tutorstack:ratelimit:{key_id}:{window}", max(1, int((window + 1) * WINDOW_SEC - now + 0.999))
