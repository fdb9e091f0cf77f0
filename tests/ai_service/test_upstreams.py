"""The upstream reader under injected faults: the tier timeout means "no first token / no progress
within N s", a slow but progressing answer is neither a timeout nor a breaker failure, the whole-
request deadline is separate, and every upstream answer shape ends in a clear verdict.

The upstream here is a small aiohttp server on a real socket (in a thread of the test process), so
ai_service's own pooled aiohttp client is what reads it: these tests inject timing faults; the real
vLLM behind a fault proxy is exercised in tests/integration/test_platform.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading

import pytest
from aiohttp import web

from ai_service.routing import CircuitBreaker, RoutePlan, Tier
from ai_service.transport import HTTPPool
from ai_service.upstreams import Upstream, UpstreamMetrics, UpstreamRouter
from common.errors import OpenAIError
from common.metrics import ServiceMetrics

PLAN = RoutePlan((Tier.LOCAL,), "test")
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chunk(content: str | None = None, finish: str | None = None, tool_call: dict | None = None,
          usage: dict | None = None, index: int = 0) -> bytes:
    delta = {}
    if content is not None:
        delta["content"] = content
    if tool_call is not None:
        delta["tool_calls"] = [tool_call]
    event = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": index, "delta": delta, "finish_reason": finish}] if usage is None else []}
    if usage is not None:
        event["usage"] = usage
    return f"data: {json.dumps(event)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


class UpstreamServer:
    """One aiohttp server for the module; each router gets its own handler under /<n>/v1."""

    def __init__(self):
        self.handlers: dict[str, object] = {}
        self.ids = itertools.count()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/{router}/v1/chat/completions", self._dispatch)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        return await self.handlers[request.match_info["router"]](request)

    def add(self, handler) -> str:
        name = str(next(self.ids))
        self.handlers[name] = handler
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module", autouse=True)
def server():
    global SERVER
    SERVER = UpstreamServer()
    yield SERVER
    SERVER.stop()


async def stream_response(request: web.Request, chunks, *, status=200, content_type="text/event-stream",
                          delays=None) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers={"content-type": content_type})
    await response.prepare(request)
    for i, piece in enumerate(chunks):
        delay = delays[i] if delays else 0
        if delay:
            await asyncio.sleep(delay)
        await response.write(piece)
    await response.write_eof()
    return response


# Tests about the tier timeout set it (0.5-1 s); the others get a generous one, so that a loaded CI machine
# (the stub upstream's first answer late by half a second) cannot turn them into timeout tests.
def make_router(chunks_or_handler, *, timeout=10.0, deadline=10.0, delays=None, status=200,
                content_type="text/event-stream", threshold=2):
    seen = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        if callable(chunks_or_handler):
            return await chunks_or_handler(request)
        return await stream_response(request, chunks_or_handler, status=status, content_type=content_type,
                                     delays=delays)

    base_url = SERVER.add(handler)
    breaker = CircuitBreaker(failure_threshold=threshold, reset_after_sec=60)
    pool = HTTPPool(base_url)
    POOLS.append(pool)
    upstream = Upstream(Tier.LOCAL, base_url, "key", "m", timeout, deadline, breaker, pool)
    router = UpstreamRouter({Tier.LOCAL: upstream}, UpstreamMetrics(ServiceMetrics("test")))
    return router, breaker, seen


POOLS: list[HTTPPool] = []


def run(coro):
    async def then_close_pools():  # each asyncio.run is a new loop: its sessions close with it
        try:
            return await coro
        finally:
            for pool in POOLS:
                await pool.aclose()

    return asyncio.run(then_close_pools())


def test_slow_but_progressing_answer_succeeds_and_is_no_breaker_failure():
    # 8 chunks 0.3 s apart: 2.4 s in all, more than twice the 1 s timeout, but never 1 s without progress.
    pieces = [chunk("word ") for _ in range(7)] + [chunk(finish="stop"), DONE]
    router, breaker, seen = make_router(pieces, timeout=1.0, delays=[0] + [0.3] * 8)
    served = run(router.complete(PLAN, BODY, "m"))
    assert served.body["choices"][0]["message"]["content"] == "word " * 7
    assert served.body["choices"][0]["finish_reason"] == "stop"
    assert breaker.consecutive_failures == 0 and breaker.state == "closed"
    assert seen[0]["stream"] is True  # read as a stream even for a client that wants one JSON answer
    assert seen[0]["stream_options"] == {"include_usage": True}


def test_no_first_token_within_the_timeout_is_a_timeout_and_a_breaker_failure():
    router, breaker, _ = make_router([chunk("late"), DONE], timeout=0.5, delays=[2.0, 0])
    with pytest.raises(OpenAIError) as err:
        run(router.complete(PLAN, BODY, "m"))
    assert err.value.status == 504 and err.value.code == "upstream_timeout"
    assert breaker.consecutive_failures == 1


def test_a_stall_mid_answer_is_a_timeout():
    router, breaker, _ = make_router([chunk("a"), chunk("b"), DONE], timeout=0.5, delays=[0, 2.0, 0])
    with pytest.raises(OpenAIError) as err:
        run(router.complete(PLAN, BODY, "m"))
    assert err.value.status == 504 and "progress" in err.value.message
    assert breaker.consecutive_failures == 1


def test_the_whole_request_deadline_is_separate_and_no_breaker_failure():
    pieces = [chunk("x") for _ in range(10)] + [DONE]
    router, breaker, _ = make_router(pieces, timeout=1.0, deadline=1.5, delays=[0] + [0.3] * 10)
    with pytest.raises(OpenAIError) as err:
        run(router.complete(PLAN, BODY, "m"))
    assert err.value.status == 504 and err.value.code == "upstream_deadline"
    assert breaker.consecutive_failures == 0


def test_streamed_client_gets_an_in_band_error_when_the_upstream_stalls():
    router, breaker, _ = make_router([chunk("a"), chunk("b"), DONE], timeout=0.5, delays=[0, 2.0, 0])

    async def collect():
        served = await router.stream(PLAN, BODY, "m")
        return b"".join([piece async for piece in served.chunks])

    text = run(collect()).decode()
    assert '"content": "a"' in text and '"code": "upstream_stream_interrupted"' in text
    assert breaker.consecutive_failures == 1


def test_content_tool_calls_and_usage_add_up():
    pieces = [
        chunk("Let me "), chunk("check."),
        chunk(tool_call={"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "search_course_docs", "arguments": '{"que'}}),
        chunk(tool_call={"index": 0, "function": {"arguments": 'ry": "thesis"}'}}),
        chunk(finish="tool_calls"),
        chunk(usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
        DONE,
    ]
    router, _, _ = make_router(pieces)
    body = run(router.complete(PLAN, BODY, "m")).body
    message = body["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "search_course_docs", "arguments": '{"query": "thesis"}'}}]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["total_tokens"] == 12 and body["object"] == "chat.completion"


@pytest.mark.parametrize("status,code,http_status", [(401, "upstream_auth_error", 502), (403, "upstream_auth_error", 502),
                                                     (429, "upstream_rate_limited", 503),
                                                     (500, "upstream_server_error", 502)])
def test_upstream_refusals_are_the_platforms_problem(status, code, http_status):
    async def refuse(_):
        return web.json_response({"error": {"message": "nope"}}, status=status)

    router, breaker, _ = make_router(refuse)
    with pytest.raises(OpenAIError) as err:
        run(router.complete(PLAN, BODY, "m"))
    assert err.value.status == http_status and err.value.code == code
    assert breaker.consecutive_failures == 1


def test_upstream_client_error_is_returned_and_the_upstream_counts_as_healthy():
    async def not_found(_):
        return web.json_response({"error": {"message": "no such model", "type": "NotFound"}}, status=404)

    router, breaker, _ = make_router(not_found)
    served = run(router.complete(PLAN, BODY, "m"))
    assert served.status == 404 and served.body["error"]["message"] == "no such model"
    assert breaker.consecutive_failures == 0


@pytest.mark.parametrize("pieces", [
    [b'data: {"error": {"message": "engine died"}}\n\n'],
    [b"data: not json\n\n"],
    [chunk("cut short")],  # the stream ends without [DONE]
])
def test_broken_streams_fail_clearly(pieces):
    router, breaker, _ = make_router(pieces)
    with pytest.raises(OpenAIError) as err:
        run(router.complete(PLAN, BODY, "m"))
    assert err.value.status in (502, 503)
    assert breaker.consecutive_failures == 1


def test_a_json_answer_to_a_stream_request_is_accepted():
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}

    async def json_answer(_):
        return web.json_response(completion)

    router, _, _ = make_router(json_answer)
    assert run(router.complete(PLAN, BODY, "m")).body == completion

    async def collect():
        served = await router.stream(PLAN, BODY, "m")
        return b"".join([piece async for piece in served.chunks]).decode()

    streamed = run(collect())
    assert '"content": "hello"' in streamed and streamed.endswith("data: [DONE]\n\n")


def test_an_unexpected_error_during_a_half_open_trial_does_not_wedge_the_breaker():
    router, breaker, _ = make_router([chunk("ok", finish="stop") + DONE], threshold=1)
    pool = router.upstreams[Tier.LOCAL].client
    real_post = pool.post_json
    calls = {"n": 0}

    async def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("a bug of any kind in the transport")
        return await real_post(*args, **kwargs)

    pool.post_json = flaky
    breaker.record_failure()
    breaker.opened_at -= 61  # half-open now
    with pytest.raises(OpenAIError):
        run(router.complete(PLAN, BODY, "m"))
    breaker.opened_at -= 61
    assert run(router.complete(PLAN, BODY, "m")).body["choices"][0]["message"]["content"] == "ok"
    assert breaker.state == "closed"


def test_a_cancelled_half_open_trial_frees_the_breaker():
    async def hang(_):
        await asyncio.sleep(3600)

    router, breaker, _ = make_router(hang, threshold=1, timeout=100)
    breaker.record_failure()
    breaker.opened_at -= 61

    async def cancel_mid_trial():
        task = asyncio.create_task(router.complete(PLAN, BODY, "m"))
        await asyncio.sleep(0.1)
        assert breaker.trial_in_flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_mid_trial())
    assert not breaker.trial_in_flight and breaker.allow_request()


def test_the_connection_goes_back_to_the_pool_after_done():
    # vLLM ends its chunked body right after [DONE]: reading to the end returns the connection to the
    # pool, so the next request reuses it instead of paying a new TCP connection.
    ports = []

    async def answer(request):
        ports.append(request.transport.get_extra_info("peername")[1])
        return await stream_response(request, [chunk("a", finish="stop"), DONE])

    router, _, _ = make_router(answer)

    async def three():
        for _ in range(3):
            await router.complete(PLAN, BODY, "m")
        served = await router.stream(PLAN, BODY, "m")
        assert [piece async for piece in served.chunks]

    run(three())
    assert len(ports) == 4 and len(set(ports)) == 1, ports
