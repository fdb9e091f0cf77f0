"""gateway.redis_pipe.PipelinedRedis against a real Redis: commands of one event-loop turn share a write, replies
go back to their own requests in order (a cancelled waiter included), reply errors and a lost connection are
redis-py's exceptions, and the next command after a lost connection connects again."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError

from gateway.ratelimit import AUTH_AND_COUNT_LUA
from gateway.redis_pipe import PipelinedRedis, supports


def test_concurrent_commands_share_writes_and_get_their_own_replies(redis_url):
    async def go():
        pipe = PipelinedRedis(redis_url)
        try:
            await pipe.execute("DEL", *(f"pipe:test:n{i}" for i in range(1, 51)))
            await pipe.execute("SET", "pipe:test:0", "zero")
            writes_before, sent_before = pipe.writes, pipe.commands_sent
            values = await asyncio.gather(*(pipe.execute("INCRBY", f"pipe:test:n{i}", i) for i in range(1, 51)),
                                          pipe.execute("GET", "pipe:test:0"), pipe.execute("GET", "pipe:test:none"))
            assert values[:50] == list(range(1, 51))
            assert values[50:] == [b"zero", None]
            assert pipe.commands_sent - sent_before == 52 and pipe.writes - writes_before == 1
            assert await pipe.execute("DEL", *(f"pipe:test:n{i}" for i in range(1, 51))) == 50
        finally:
            await pipe.aclose()

    asyncio.run(go())


def test_a_cancelled_waiter_does_not_shift_the_replies(redis_url):
    async def go():
        pipe = PipelinedRedis(redis_url)
        try:
            await pipe.execute("SET", "pipe:test:a", "A")
            await pipe.execute("SET", "pipe:test:b", "B")
            first = asyncio.ensure_future(pipe.execute("GET", "pipe:test:a"))
            await asyncio.sleep(0)  # sent, not answered yet
            first.cancel()
            assert await pipe.execute("GET", "pipe:test:b") == b"B"
            assert await pipe.execute("GET", "pipe:test:a") == b"A"
        finally:
            await pipe.aclose()

    asyncio.run(go())


def test_errors_scripts_and_a_lost_connection(redis_url):
    async def go():
        pipe, admin = PipelinedRedis(redis_url), aioredis.from_url(redis_url)
        try:
            with pytest.raises(ResponseError, match="unknown command"):
                await pipe.execute("NOSUCHCOMMAND")
            await admin.script_flush()
            sha = admin.register_script(AUTH_AND_COUNT_LUA).sha
            await pipe.execute("SET", "pipe:test:record", "rec")
            keys = ["pipe:test:record", "pipe:test:counter"]
            assert await pipe.evalsha(sha, AUTH_AND_COUNT_LUA, keys, [120]) == [b"rec", 1]  # EVAL: not loaded
            assert await pipe.evalsha(sha, AUTH_AND_COUNT_LUA, keys, [120]) == [b"rec", 2]  # EVALSHA now
            assert await pipe.evalsha(sha, AUTH_AND_COUNT_LUA, ["pipe:test:none", "x"], [120]) is None
            # Redis drops the connection (a restart looks the same): the next command connects again
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await asyncio.sleep(0.1)
            assert await pipe.execute("GET", "pipe:test:record") == b"rec"
        finally:
            await admin.delete("pipe:test:record", "pipe:test:counter")
            await admin.aclose()
            await pipe.aclose()

    asyncio.run(go())


def test_refused_connection_is_a_connection_error_and_other_urls_keep_redis_py():
    from tests.support.processes import free_port

    async def go():
        pipe = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(ConnectionError):
            await pipe.execute("PING")

    asyncio.run(go())
    assert supports("redis://:pw@h:6379/1")
    assert not supports("rediss://h:6380/0") and not supports("unix:///run/redis.sock")
