"""ProgressClock (one lazily re-armed timer per attempt) and SSEParser (one JSON parse per read): the same
verdicts as a timeout around each wait and a parse per event, at a fraction of the cost."""

from __future__ import annotations

import asyncio
import time

import pytest

from ai_service.upstreams import DeadlineExceeded, ProgressClock, SSEParser, UpstreamStreamError


def test_waits_shorter_than_the_timeout_pass_however_long_the_whole_takes():
    async def go():
        loop = asyncio.get_running_loop()
        armed = []
        call_at = loop.call_at

        def counting_call_at(when, callback, *args, **kwargs):
            if getattr(callback, "__self__", None) is clock:
                armed.append(when)
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counting_call_at
        clock = ProgressClock(timeout=0.15, deadline=10)
        started = time.monotonic()
        for _ in range(12):
            assert await clock.within(asyncio.sleep(0.05, result="ok")) == "ok"
        elapsed = time.monotonic() - started
        assert 1 <= len(armed) <= 6  # a timer per timeout period, not one per wait
        assert clock._handle is not None
        clock.close()
        assert clock._handle is None
        return elapsed

    assert asyncio.run(go()) > 0.5  # longer than the timeout in total, never a timeout


def test_a_wait_past_the_timeout_is_a_timeout_and_the_next_wait_is_watched_again():
    async def go():
        clock = ProgressClock(timeout=0.1, deadline=10)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await clock.within(asyncio.sleep(5))
        assert 0.09 < time.monotonic() - started < 1.0
        assert asyncio.current_task().cancelling() == 0  # our cancellation was taken back
        assert await clock.within(asyncio.sleep(0.01, result=1)) == 1
        with pytest.raises(TimeoutError):
            await clock.within(asyncio.sleep(5))
        clock.close()

    asyncio.run(go())


def test_the_deadline_when_it_is_the_nearer_limit():
    async def go():
        clock = ProgressClock(timeout=1.0, deadline=0.12)
        await clock.within(asyncio.sleep(0.05))
        with pytest.raises(DeadlineExceeded):
            await clock.within(asyncio.sleep(5))
        with pytest.raises(DeadlineExceeded):  # past the deadline: refused at once, the coroutine closed
            await clock.within(asyncio.sleep(5))
        clock.close()

    asyncio.run(go())


def test_a_cancellation_from_outside_stays_a_cancellation():
    async def go():
        clock = ProgressClock(timeout=0.2, deadline=10)
        task = asyncio.create_task(clock.within(asyncio.sleep(5)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.close()

    asyncio.run(go())


def test_sse_parser_events_done_and_errors():
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [{"a": 1}]
    assert parser.feed(b': 2}\r\n\r\n: a comment\nevent: x\ndata:{"c":3}\n\ndata: [DONE]\n\n') == [{"b": 2}, {"c": 3}]
    assert parser.done
    for bad, message in [(b'data: {"a":1}\ndata: nope\n', "not JSON: b'nope'"),
                         (b"data: 1,2\n", "not JSON: b'1,2'"), (b"data:\n", "not JSON: b''"),
                         (b"data: [1]\n", "not a JSON object"),
                         (b'data: {"error": {"message": "boom"}}\n', "error event: boom"),
                         (b'data: {"a": 1}\ndata: {"object": "error", "message": "m"}\n', "error event: m")]:
        with pytest.raises(UpstreamStreamError, match=message.replace("[", r"\[")):
            SSEParser().feed(bad)
