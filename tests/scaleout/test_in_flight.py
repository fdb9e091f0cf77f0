"""A replica's in-flight count returns to zero however a request ends (ai_service/replica_pool.py, Lease).

The real path without vLLM: two fake replicas (in-process aiohttp servers speaking vLLM's SSE), the pool
and UpstreamRouter that ai_service builds (aiohttp to the replicas), the answer relayed by RelayResponse
to a scripted ASGI client. Each case cancels the request, or lets the client go away, at one stage of
the exchange and checks every replica's count (and its gauge) is back to zero once the request's task
has ended, then that the pool still serves."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from ai_service.routing import RoutePlan, Tier
from ai_service.settings import AIServiceSettings
from ai_service.transport import RelayResponse
from ai_service.upstreams import build_upstreams
from common.metrics import ServiceMetrics
from tests.support.processes import free_port

BASE = "base-model"
SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST", "headers": []}


def chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": BASE,
                                   "choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


class FakeReplica:
    """/health, /metrics, /v1/models for the pool's probes; /v1/chat/completions streams `chunks`,
    stopping where `hang` says; llm_server's /v1/adapters/load (on the same port) hangs when asked."""

    def __init__(self):
        self.port = free_port()
        self.hang = ""  # "", "headers" (before the response), "first" (after headers), "second" (after one chunk)
        self.reached = asyncio.Event()  # the request got as far as `hang`
        self.requests = 0
        self.closed = 0  # streams whose client (ai_service) closed the connection before the end
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/v1/adapters/load", self.load)
        # handlers are cancelled when ai_service closes the connection, and nothing waits for them at the end
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FakeReplica":
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def health(self, request):
        return web.Response(text="ok")

    async def metrics(self, request):
        return web.Response(text='vllm:num_requests_running{engine="0"} 0\n')

    async def models(self, request):
        return web.json_response({"data": [{"id": BASE, "parent": None}]})

    async def load(self, request):
        self.reached.set()
        await asyncio.sleep(3600)

    async def completions(self, request):
        self.requests += 1
        await request.read()
        try:
            if self.hang == "headers":
                self.reached.set()
                await asyncio.sleep(3600)
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            if self.hang == "first":
                self.reached.set()
                await asyncio.sleep(3600)
            await response.write(chunk("Hello"))
            if self.hang == "second":
                self.reached.set()
                await asyncio.sleep(3600)
            await response.write(chunk(" world"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed += 1
            raise


class Client:
    """The ASGI side of one streamed answer: goes away (http.disconnect) when `leave` is set, and can
    hold the sending of a chunk (a slow client) until then."""

    def __init__(self, hold_start: bool = False, hold_body: bool = False):
        self.leave = asyncio.Event()
        self.sending = asyncio.Event()  # the relay is blocked in send()
        self.first_body = asyncio.Event()
        self.hold_start, self.hold_body = hold_start, hold_body
        self.body = b""

    async def receive(self):
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        if message["type"] == "http.response.start" and self.hold_start:
            self.sending.set()
            await asyncio.Event().wait()  # the client is gone before the first byte: cancelled here
        if message["type"] == "http.response.body" and message.get("body"):
            self.body += message["body"]
            self.first_body.set()
            if self.hold_body:
                self.sending.set()
                await asyncio.Event().wait()  # a slow client, then gone: the relay is suspended at a chunk


async def passthrough(chunks):
    """Stands in for the wrappers ai_service puts around a stream (moderation, citations): an async
    generator that is never started when the client goes away before the first chunk."""
    async for piece in chunks:
        yield piece


async def settle() -> None:
    # A lease left to the request's end is released by the task's done callback: one loop turn later.
    for _ in range(3):
        await asyncio.sleep(0)


def in_flight(router) -> dict[str, tuple[int, float]]:
    pool = router.pool
    return {r.name: (r.in_flight, pool.metrics.in_flight.labels(r.name)._value.get()) for r in pool.replicas.values()}


async def make_router(replicas, **env):
    urls = ",".join(f"{r.url}/v1" for r in replicas)
    settings = AIServiceSettings(app_env="dev", LLM_BASE_URL_LOCAL=urls, LLM_MODEL_LOCAL=BASE,
                                 LLM_REPLICA_CONTROL_URLS=",".join(r.url for r in replicas), LLM_REPLICA_POLL_SEC=3600,
                                 llm_local_timeout_sec=30, **env)
    router = build_upstreams(settings, ServiceMetrics("ai_service"))
    await router.pool.refresh()
    return router


async def request(router, client: Client, model: str = BASE, error_before_relay: bool = False) -> None:
    """One streamed chat as ai_service serves it: route, wrap, relay."""
    served = await router.stream(RoutePlan((Tier.LOCAL,)), {"messages": [{"role": "user", "content": "hi"}]}, model)
    body = passthrough(served.chunks)
    if error_before_relay:  # e.g. a header that cannot be encoded, a check that fails: the stream is dropped
        raise RuntimeError("failed after the answer was served, before the relay")
    await RelayResponse(body, media_type="text/event-stream")(SCOPE, client.receive, client.send)


STAGES = ["adapter_load", "connect", "upstream_headers", "first_chunk", "response_start", "error_before_relay",
          "mid_stream", "mid_stream_slow_client", "end"]


@pytest.mark.parametrize("stage", STAGES)
def test_in_flight_returns_to_zero_whatever_stage_the_request_ends_at(stage):
    async def scenario():
        replicas = [await FakeReplica().start() for _ in range(2)]
        router = await make_router(replicas)
        client = Client(hold_start=stage == "response_start", hold_body=stage == "mid_stream_slow_client")
        for replica in replicas:
            replica.hang = {"upstream_headers": "headers", "first_chunk": "first", "mid_stream": "second"}.get(stage, "")
        started = asyncio.Event()
        if stage == "connect":  # opening the connection to the replica takes long: cancelled meanwhile
            for upstream in router.pool.upstreams.values():
                real = upstream.client.post_json

                async def slow_connect(*args, _real=real, **kwargs):
                    started.set()
                    await asyncio.sleep(3600)
                    return await _real(*args, **kwargs)

                upstream.client.post_json = slow_connect
        model = "coach" if stage == "adapter_load" else BASE  # an adapter no replica has: loaded on demand
        task = asyncio.create_task(request(router, client, model, error_before_relay=stage == "error_before_relay"))

        async def reached():
            if stage in ("adapter_load", "upstream_headers", "first_chunk", "mid_stream"):
                await asyncio.wait([asyncio.ensure_future(r.reached.wait()) for r in replicas],
                                   return_when=asyncio.FIRST_COMPLETED)
            elif stage == "connect":
                await started.wait()
            elif stage in ("response_start", "mid_stream_slow_client"):
                await client.sending.wait()
            if stage == "mid_stream":
                await client.first_body.wait()  # the first chunk reached the client; the second is awaited

        if stage not in ("error_before_relay", "end"):
            await asyncio.wait_for(reached(), 10)
            assert sorted(n for n, _ in in_flight(router).values()) == [0, 1], "counted while in flight"
            if stage in ("response_start", "mid_stream", "mid_stream_slow_client"):
                client.leave.set()  # the client goes away: the relay is cancelled
            else:
                task.cancel()  # the request is cancelled (shutdown, a timeout above, the caller gone)
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await asyncio.wait_for(task, 10)
        await settle()
        assert all(count == (0, 0.0) for count in in_flight(router).values()), (stage, in_flight(router))
        if stage == "end":
            assert client.body.endswith(b"data: [DONE]\n\n")
        if stage == "mid_stream":
            assert client.body == chunk("Hello")

        # the pool still counts and serves: a full answer on a fresh request
        for replica in replicas:
            replica.hang = ""
        if stage == "connect":
            for upstream in router.pool.upstreams.values():
                del upstream.client.post_json
        again = Client()
        await asyncio.wait_for(request(router, again), 10)
        await settle()
        assert again.body.endswith(b"data: [DONE]\n\n")
        assert all(count == (0, 0.0) for count in in_flight(router).values())
        await router.aclose()
        for replica in replicas:
            await replica.runner.cleanup()

    asyncio.run(scenario())


def test_a_stream_closed_before_its_first_chunk_releases_at_once():
    async def scenario():
        replicas = [await FakeReplica().start() for _ in range(2)]
        router = await make_router(replicas)
        served = await router.stream(RoutePlan((Tier.LOCAL,)), {"messages": []}, BASE)
        assert sorted(n for n, _ in in_flight(router).values()) == [0, 1]
        await served.chunks.aclose()  # no task has ended yet: the close itself releases
        assert all(count == (0, 0.0) for count in in_flight(router).values())
        await served.chunks.aclose()  # released once, never below zero or twice
        assert all(count == (0, 0.0) for count in in_flight(router).values())
        await router.aclose()
        for replica in replicas:
            await replica.runner.cleanup()

    asyncio.run(scenario())


def test_a_stream_dropped_unread_is_released_when_its_request_ends():
    async def scenario():
        replicas = [await FakeReplica().start() for _ in range(2)]
        router = await make_router(replicas)
        kept = []

        async def handler():
            served = await router.stream(RoutePlan((Tier.LOCAL,)), {"messages": []}, BASE)
            kept.append(served)  # still referenced, never read, never closed: only the task's end releases it

        await asyncio.create_task(handler())
        await settle()
        assert all(count == (0, 0.0) for count in in_flight(router).values())
        await router.aclose()
        for replica in replicas:
            await replica.runner.cleanup()

    asyncio.run(scenario())
