"""The gateway's key check is bounded in time by one watchdog for all calls in flight (gateway.auth.CallWatchdog)
instead of redis-py's per-command socket timeout: a Redis that accepts connections but never answers still
gets the request a 503 within the bound, and other cancellations stay cancellations."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.auth import CallWatchdog
from tests.gateway.test_edge import asgi, auth, make_gateway, run


@pytest.fixture()
def silent_redis():
    """A TCP server that accepts and reads, and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    conns, stop = [], threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conns.append(conn)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for conn in conns:
        conn.close()
    server.close()


def test_a_redis_that_never_answers_gets_a_503_within_the_bound(silent_redis):
    async def scenario():
        app = make_gateway(silent_redis, [])
        app.state.gatekeeper.watchdog = CallWatchdog(timeout=0.3)
        started = time.monotonic()
        answer = await asgi(app, "GET", "/v1/models", auth("ts-some-key"))
        elapsed = time.monotonic() - started
        assert answer["status"] == 503 and answer["json"]["error"]["code"] == "key_store_unavailable"
        assert 0.25 < elapsed < 2.0, elapsed
        assert asyncio.current_task().cancelling() == 0
        assert not app.state.gatekeeper.watchdog._calls
        assert app.state.gatekeeper.pipe._protocol is None  # the silent connection was dropped, not queued on
        again = await asgi(app, "GET", "/v1/models", auth("ts-some-key"))
        assert again["status"] == 503

    run(scenario())


def test_the_watchdog_leaves_quick_calls_and_outside_cancellations_alone():
    async def go():
        watchdog = CallWatchdog(timeout=0.2, period=0.05)
        for _ in range(5):  # quick calls, over more than the timeout in total
            assert await watchdog.run(asyncio.sleep(0.06, result=7)) == 7
        with pytest.raises(RedisTimeoutError):
            await watchdog.run(asyncio.sleep(5))
        task = asyncio.create_task(watchdog.run(asyncio.sleep(5)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        assert not watchdog._calls and watchdog._handle is None  # idle: no timer left ticking

    asyncio.run(go())
