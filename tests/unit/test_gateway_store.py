"""API keys and the rate limiter against a real Redis (started once per session)."""

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.keys import APIKeyStore, RecordSigner, digest
from gateway.ratelimit import RateLimiter


def run(coro):
    return asyncio.run(coro)


async def _with_redis(url, action):
    client = aioredis.from_url(url)
    try:
        return await action(client)
    finally:
        await client.aclose()


def test_keys_are_stored_hashed_and_can_be_revoked(redis_url):
    async def scenario(client):
        store = APIKeyStore(client, RecordSigner("unit-test-secret"))
        plain, key = await store.create("course-101", classification="public", rpm=42)
        assert plain.startswith("ts-") and len(plain) > 40
        raw_values = [await client.get(k) for k in await client.keys("tutorstack:apikeys:*") if k != b"tutorstack:apikeys:index"]
        assert all(plain.encode() not in (v or b"") for v in raw_values)  # the secret itself is never stored
        assert await client.exists(f"tutorstack:apikeys:{digest(plain)}")
        found = await store.lookup(plain)
        assert found == key and found.classification == "public" and found.rpm == 42
        assert await store.lookup(plain + "x") is None
        assert key.id in [k.id for k in await store.list()]
        assert await store.revoke(key.id)
        assert await store.lookup(plain) is None
        assert not await store.revoke(key.id)

    run(_with_redis(redis_url, scenario))


def test_key_creation_validates_input(redis_url):
    async def scenario(client):
        store = APIKeyStore(client, RecordSigner("unit-test-secret"))
        with pytest.raises(ValueError):
            await store.create("x", classification="secret")
        with pytest.raises(ValueError):
            await store.create("x", rpm=0)

    run(_with_redis(redis_url, scenario))


def test_rate_limit_window_counts_and_resets(redis_url):
    now = [1_000_040.0]  # 20 s into a minute window

    async def scenario(client):
        limiter = RateLimiter(client, clock=lambda: now[0])
        decisions = [await limiter.hit("key-a", 3) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert decisions[-1].reset_sec == 40
        assert decisions[-1].headers()["x-ratelimit-limit-requests"] == "3"
        assert (await limiter.hit("key-b", 3)).allowed  # limits are per key
        now[0] += 40  # next window
        assert (await limiter.hit("key-a", 3)).allowed

    run(_with_redis(redis_url, scenario))
