"""Carries out a route plan over real HTTP: tries the tiers in order, applies timeouts,
breakers and fallback rules from ai_service.routing, and streams without buffering."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from ai_service.routing import (
    BREAKER_FAILURES,
    STATUS_BY_FAILURE,
    CircuitBreaker,
    Failure,
    RoutePlan,
    Tier,
    classify_status,
    should_fall_back,
)
from ai_service.transport import HTTPPool, loads
from common.errors import OpenAIError, error_body_for_status
from common.http import request_id_headers
from common.metrics import LabelledChildren, ServiceMetrics

log = logging.getLogger("ai_service.upstreams")


@dataclass
class Upstream:
    tier: Tier
    base_url: str
    api_key: str
    model: str
    timeout: float  # no first token, or no progress, within this many seconds: the upstream hangs
    deadline: float  # the whole answer, however well it progresses
    breaker: CircuitBreaker
    client: HTTPPool  # pooled keep-alive connections to base_url (ai_service.transport)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}", **request_id_headers()}

    async def models(self) -> list[dict]:
        """The upstream's model list (GET /models)."""
        body = await self.client.get_json("/models", headers=self.headers(), timeout=self.timeout)
        return body.get("data", []) if isinstance(body, dict) else []


@dataclass
class Served:
    """A successful (or client-error) answer from one tier."""

    tier: Tier
    model: str
    status: int
    body: dict | None = None  # non-streamed
    chunks: AsyncIterator[bytes] | None = None  # streamed
    replica: str = ""  # which local replica served it (host:port), when there are several (replica_pool)


class UpstreamMetrics:
    def __init__(self, metrics: ServiceMetrics):
        self.attempts = metrics.counter(
            "tutorstack_upstream_requests_total", "Attempts per upstream tier and outcome",
            ["upstream", "outcome", "stream"])
        self.fallbacks = metrics.counter(
            "tutorstack_upstream_fallbacks_total", "Moves to the next tier, by reason",
            ["from_upstream", "to_upstream", "reason"])
        self.served = metrics.counter(
            "tutorstack_responses_by_upstream_total", "Responses by the upstream that served them",
            ["upstream", "status"])
        self.latency = metrics.histogram(
            "tutorstack_upstream_latency_seconds", "Time to the upstream's full answer (non-stream) or first chunk (stream)",
            ["upstream", "stream"])
        self.children = LabelledChildren(limit=1024)


class UpstreamRouter:
    def __init__(self, upstreams: dict[Tier, Upstream], metrics: UpstreamMetrics):
        self.upstreams = upstreams
        self.metrics = metrics
        self.pool = None  # ai_service.replica_pool.ReplicaPool: several local replicas (build_upstreams)
        self.cloud_body_filter = None  # safety (ai_service/moderation.py): redacts personal data for the cloud tier

    async def aclose(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.client.aclose()
        if self.pool is not None:
            await self.pool.aclose()

    def _model_for(self, upstream: Upstream, requested_model: str) -> str:
        # Adapters live only on the local vLLM; the cloud tier always serves its own model.
        if upstream.tier is Tier.LOCAL:
            return requested_model or upstream.model
        return upstream.model

    async def complete(self, plan: RoutePlan, body: dict, requested_model: str) -> Served:
        return await self._run(plan, body, requested_model, stream=False)

    async def stream(self, plan: RoutePlan, body: dict, requested_model: str) -> Served:
        return await self._run(plan, body, requested_model, stream=True)

    async def _run(self, plan: RoutePlan, body: dict, requested_model: str, *, stream: bool) -> Served:
        if not plan.tiers:
            raise OpenAIError(403, f"No upstream may serve this request: {plan.cloud_excluded_because}.",
                              code="upstream_not_allowed")
        failures: list[tuple[Tier, Failure, str]] = []
        for index, tier in enumerate(plan.tiers):
            upstream = self.upstreams[tier]
            model = self._model_for(upstream, requested_model)
            if tier is Tier.LOCAL and self.pool is not None:  # pick a replica (ai_service/replica_pool.py)
                outcome = await self.pool.serve(model, lambda replica, name: self._attempt(
                    replica, {**body, "model": name, "stream": stream}, stream))
            else:
                if tier is Tier.CLOUD and self.cloud_body_filter is not None:  # safety: no personal data to the cloud
                    body = self.cloud_body_filter(body)
                outcome = await self._attempt(upstream, {**body, "model": model, "stream": stream}, stream)
            if isinstance(outcome, Served):
                self.metrics.children.get(self.metrics.served, tier.value, str(outcome.status)).inc()
                return outcome
            failure, detail = outcome
            failures.append((tier, failure, detail))
            next_tier = plan.tiers[index + 1] if index + 1 < len(plan.tiers) else None
            if next_tier is not None and should_fall_back(failure, first_byte_sent=False):
                self.metrics.fallbacks.labels(tier.value, next_tier.value, failure.value).inc()
                log.warning("falling back", extra={"from_upstream": tier.value, "to_upstream": next_tier.value,
                                                   "reason": failure.value, "detail": detail})
                continue
            break
        raise self._no_upstream_error(plan, failures)

    def _no_upstream_error(self, plan: RoutePlan, failures: list[tuple[Tier, Failure, str]]) -> OpenAIError:
        tier, failure, _ = failures[-1]
        tried = "; ".join(f"{t.value}: {f.value} ({d})" for t, f, d in failures)
        message = f"No upstream could serve the request. Tried {tried}."
        if Tier.CLOUD not in plan.tiers and plan.cloud_excluded_because:
            message += f" No cloud fallback: {plan.cloud_excluded_because}."
        return OpenAIError(STATUS_BY_FAILURE[failure], message, code=f"upstream_{failure.value}",
                           headers={"x-tutorstack-upstream": "none"})

    async def _attempt(self, upstream: Upstream, body: dict, stream: bool) -> Served | tuple[Failure, str]:
        """One try on one tier. The upstream is always read as a stream, even for a client that wants one
        JSON answer, so that the tier's timeout means "no first token, or no progress, within N s" and a
        slow but progressing generation is never taken for a hung one."""
        stream_label = "true" if stream else "false"
        with upstream.breaker.attempt() as attempt:
            if not attempt.allowed:
                self.metrics.attempts.labels(upstream.tier.value, Failure.CIRCUIT_OPEN.value, stream_label).inc()
                return Failure.CIRCUIT_OPEN, "circuit breaker open"
            clock = ProgressClock(upstream.timeout, upstream.deadline)
            started = time.perf_counter()
            response: aiohttp.ClientResponse | None = None
            upstream_body = {**body, "stream": True}
            if not stream:
                upstream_body["stream_options"] = {"include_usage": True}
            try:
                response = await clock.within(
                    upstream.client.post_json("/chat/completions", upstream_body, upstream.headers()))
                failure = classify_status(response.status)
                if failure is not None:
                    raw_body = await clock.within(response.read())
                    response.release()
                    clock.close()
                    if failure is Failure.CLIENT_ERROR:
                        # The upstream is healthy and the request is wrong: returned, never retried.
                        attempt.success()
                        self.metrics.attempts.labels(upstream.tier.value, failure.value, stream_label).inc()
                        return Served(upstream.tier, body["model"], response.status,
                                      body=_json_or_error(response.status, raw_body))
                    attempt.failure()
                    self.metrics.attempts.labels(upstream.tier.value, failure.value, stream_label).inc()
                    return failure, f"HTTP {response.status}: {_error_message(raw_body)}"
                if not _is_event_stream(response):
                    # An upstream that ignores stream=true (some cloud proxies) answers one JSON body.
                    raw_body = await clock.within(response.read())
                    response.release()
                    clock.close()
                    completion = _json_or_error(response.status, raw_body)
                    attempt.success()
                    self._record_ok(upstream, stream_label, started)
                    if stream:
                        return Served(upstream.tier, body["model"], 200, chunks=_completion_as_sse(completion))
                    return Served(upstream.tier, body["model"], 200, body=completion)
                raw = response.content.iter_any()
                first_chunk = await clock.within(anext(raw))
            except Exception as exc:  # every way an attempt can fail is a verdict on the upstream
                clock.close()
                await _close_quietly(response)
                failure, detail = _failure_of(exc, clock, upstream)
                if failure in BREAKER_FAILURES:
                    attempt.failure()
                return self._failed(upstream, failure, detail, stream_label, exc)
            attempt.success()  # the first token came: the upstream is alive
            self._record_ok(upstream, stream_label, started)
            if stream:
                return Served(upstream.tier, body["model"], response.status,
                              chunks=self._relay(upstream, response, first_chunk, raw, clock))
        # A client that wants one JSON answer: gather the stream, still watching its progress. Nothing has
        # reached the client yet, so a failure here may still fall back to the next tier.
        try:
            completion = await _gather_completion(first_chunk, raw, clock, response.content)
        except Exception as exc:
            failure, detail = _failure_of(exc, clock, upstream)
            if failure in BREAKER_FAILURES:
                upstream.breaker.record_failure()
            return self._failed(upstream, failure, detail, stream_label, exc)
        finally:
            clock.close()
            await _close_quietly(response)
        return Served(upstream.tier, body["model"], 200, body=completion)

    def _record_ok(self, upstream: Upstream, stream_label: str, started: float) -> None:
        self.metrics.children.get(self.metrics.latency, upstream.tier.value, stream_label).observe(time.perf_counter() - started)
        self.metrics.children.get(self.metrics.attempts, upstream.tier.value, "ok", stream_label).inc()

    def _failed(self, upstream, failure, detail, stream_label, exc) -> tuple[Failure, str]:
        self.metrics.attempts.labels(upstream.tier.value, failure.value, stream_label).inc()
        log.info("upstream attempt failed", extra={"upstream": upstream.tier.value, "failure": failure.value,
                                                   "error": repr(exc)[:200]})
        return failure, detail

    async def _relay(self, upstream: Upstream, response: aiohttp.ClientResponse, first_chunk: bytes,
                     chunks: AsyncIterator[bytes], clock: "ProgressClock") -> AsyncIterator[bytes]:
        """Yields the upstream's SSE bytes as they come. After the first byte there is no
        fallback: a failure (or a stall longer than the timeout) ends the stream with an in-band
        OpenAI error event."""
        try:
            yield first_chunk
            while True:
                try:
                    chunk = await clock.within(anext(chunks))
                except StopAsyncIteration:
                    return
                yield chunk
        except Exception as exc:
            failure, detail = _failure_of(exc, clock, upstream)
            if failure in BREAKER_FAILURES:
                upstream.breaker.record_failure()
            self.metrics.attempts.labels(upstream.tier.value, "stream_interrupted", "true").inc()
            log.warning("stream interrupted", extra={"upstream": upstream.tier.value, "failure": failure.value,
                                                     "error": repr(exc)[:200]})
            code = "upstream_deadline" if failure is Failure.DEADLINE else "upstream_stream_interrupted"
            yield sse_error_event(STATUS_BY_FAILURE.get(failure, 502),
                                  f"The {upstream.tier.value} upstream failed mid-stream: {detail}.", code=code)
        finally:
            clock.close()
            await _close_quietly(response)


class DeadlineExceeded(Exception):
    """The whole-request deadline passed while the upstream was still making progress."""


class UpstreamStreamError(Exception):
    """The upstream's stream carried an error event, or was not the OpenAI protocol."""


class ProgressClock:
    """Two limits for one attempt: `timeout` between any two signs of progress (response headers, first
    chunk, each next chunk) and one generous `deadline` for the whole answer.

    One loop timer per attempt, re-armed lazily, instead of asyncio.timeout around each wait (which makes and
    cancels a timer per chunk, several per request): each wait only notes when it began; when the timer
    fires it either finds the wait in progress past its limit and cancels it (TimeoutError, or
    DeadlineExceeded when the deadline was the nearer limit), or sets itself for the current wait's limit.
    `close()` when the attempt is over (a timer left behind fires once and finds nothing to do)."""

    def __init__(self, timeout: float, deadline: float):
        self.timeout = timeout
        self.deadline_at = time.monotonic() + deadline
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._began = 0.0
        self._waiting = False
        self._expired: type[Exception] | None = None

    async def within(self, awaitable):
        now = time.monotonic()
        if now >= self.deadline_at:
            _cancel(awaitable)
            raise DeadlineExceeded()
        task = asyncio.current_task()
        cancelling = task.cancelling()
        self._task, self._began, self._waiting, self._expired = task, now, True, None
        if self._handle is None:
            self._arm(now)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired is not None and task.uncancel() <= cancelling:
                raise self._expired() from None
            raise
        finally:
            self._waiting = False

    def _limit(self) -> float:
        return min(self._began + self.timeout, self.deadline_at)

    def _arm(self, now: float) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + max(0.0, self._limit() - now), self._check)

    def _check(self) -> None:
        self._handle = None
        if not self._waiting:
            return  # between waits: the next wait arms the timer again
        now = time.monotonic()
        limit = self._limit()
        if now < limit:
            self._arm(now)
            return
        self._expired = DeadlineExceeded if self.deadline_at < self._began + self.timeout else TimeoutError
        self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _cancel(awaitable) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # an un-awaited coroutine: close it instead of leaking a warning


def _failure_of(exc: BaseException, clock: ProgressClock, upstream: Upstream) -> tuple[Failure, str]:
    if isinstance(exc, DeadlineExceeded):
        return Failure.DEADLINE, "the answer was still coming when the request deadline passed"
    if isinstance(exc, TimeoutError):  # aiohttp's own timeouts are TimeoutErrors too
        return Failure.TIMEOUT, f"no first token or no progress within {clock.timeout:g}s"
    if isinstance(exc, (aiohttp.ClientError, OSError, StopAsyncIteration)):
        return Failure.CONNECT, type(exc).__name__
    if isinstance(exc, OpenAIError):
        return Failure.BAD_RESPONSE, exc.message
    return Failure.BAD_RESPONSE, f"{type(exc).__name__}: {str(exc)[:200]}"


async def _close_quietly(response: aiohttp.ClientResponse | None) -> None:
    """Back to the pool when the body was read to its end; the connection is closed otherwise."""
    if response is not None:
        try:
            response.release()
        except Exception:  # closing a broken connection may fail too; nothing is left to do
            pass


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _error_message(raw: bytes) -> str:
    try:
        body = loads(raw)
        if isinstance(body, dict):
            error = body.get("error")
            return str(error.get("message") if isinstance(error, dict) else body.get("message") or body)[:200]
    except ValueError:
        pass
    return _text(raw)[:200]


async def _gather_completion(first_chunk: bytes, chunks: AsyncIterator[bytes], clock: ProgressClock,
                             content: aiohttp.StreamReader | None = None) -> dict:
    """The chat.completion object that the streamed chunks add up to (content, tool calls, usage).
    `content`: the body's reader, to skip draining a body already read to its end."""
    accumulator = CompletionAccumulator()
    parser = SSEParser()
    for event in parser.feed(first_chunk):
        accumulator.add(event)
    while not parser.done:
        try:
            chunk = await clock.within(anext(chunks))
        except StopAsyncIteration:
            break
        for event in parser.feed(chunk):
            accumulator.add(event)
    if parser.done and not (content is not None and content.at_eof()):
        await _drain(chunks)
    if not parser.done:
        raise aiohttp.ClientPayloadError("the stream ended before [DONE]")
    return accumulator.result()


async def _drain(chunks: AsyncIterator[bytes], budget: float = 0.5, limit: int = 64 * 1024) -> None:
    """Read what follows [DONE] (the end of the chunked body) so the connection goes back to the pool
    instead of being closed: otherwise every request pays a new TCP connection to the model server."""
    read = 0
    try:
        async with asyncio.timeout(budget):
            async for chunk in chunks:
                read += len(chunk)
                if read > limit:
                    return
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass


class SSEParser:
    """Splits SSE bytes into the JSON objects of their `data:` lines; notes `data: [DONE]`."""

    def __init__(self):
        self.buffer = b""
        self.done = False

    def feed(self, chunk: bytes) -> list[dict]:
        if b"\n" not in chunk:
            self.buffer += chunk
            return []
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")  # one split per read, not one per line
        datas = [line[5:].strip() for line in [line.strip() for line in lines] if line.startswith(b"data:")]
        if b"[DONE]" in datas:
            self.done = True
            datas = [data for data in datas if data != b"[DONE]"]
        if not datas:
            return []
        try:  # all of this read's events in one parse
            events = loads(b"[" + b",".join(datas) + b"]")
        except ValueError:
            events = None
        if events is None or len(events) != len(datas):  # one is not JSON (or not one value): say which
            events = []
            for data in datas:
                try:
                    events.append(loads(data))
                except ValueError as exc:
                    raise UpstreamStreamError(f"an event that is not JSON: {data[:80]!r}") from exc
        for event in events:
            if not isinstance(event, dict):
                raise UpstreamStreamError("an event that is not a JSON object")
            if "error" in event or event.get("object") == "error":
                error = event.get("error", event)
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise UpstreamStreamError(f"error event: {str(message)[:200]}")
        return events


class CompletionAccumulator:
    """Adds chat.completion.chunk objects up into one chat.completion."""

    def __init__(self):
        self.meta: dict = {}
        self.choices: dict[int, dict] = {}
        self.usage: dict | None = None
        self._meta_missing = ["id", "created", "model", "system_fingerprint"]

    def add(self, chunk: dict) -> None:
        # Called once per token on the hot path: one pass over what each chunk holds, nothing more.
        if self._meta_missing:
            for key in tuple(self._meta_missing):  # the first value of each key wins
                value = chunk.get(key)
                if value is not None:
                    self.meta[key] = value
                    self._meta_missing.remove(key)
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        for delta_choice in chunk.get("choices") or ():
            index = delta_choice.get("index", 0)
            choice = self.choices.get(index)
            if choice is None:
                choice = self.choices[index] = {"index": index, "message": {"role": "assistant", "content": ""},
                                                "finish_reason": None, "logprobs": None}
            delta = delta_choice.get("delta")
            if delta:
                message = choice["message"]
                for key, value in delta.items():
                    if not value:
                        continue
                    if key == "content":
                        message["content"] += value
                    elif key == "role":
                        message["role"] = value
                    elif key == "reasoning_content" or key == "reasoning":
                        message[key] = message.get(key, "") + value
                    elif key == "tool_calls":
                        _add_tool_calls(message, value)
            logprobs = delta_choice.get("logprobs")
            if logprobs and logprobs.get("content"):
                choice["logprobs"] = choice["logprobs"] or {"content": []}
                choice["logprobs"]["content"].extend(logprobs["content"])
            finish_reason = delta_choice.get("finish_reason")
            if finish_reason:
                choice["finish_reason"] = finish_reason

    def result(self) -> dict:
        choices = [self.choices[i] for i in sorted(self.choices)]
        for choice in choices:
            if choice["message"].get("tool_calls") and not choice["message"]["content"]:
                choice["message"]["content"] = None
        body = {"id": self.meta.get("id", ""), "object": "chat.completion",
                "created": self.meta.get("created", int(time.time())), "model": self.meta.get("model", ""),
                "choices": choices}
        if self.meta.get("system_fingerprint"):
            body["system_fingerprint"] = self.meta["system_fingerprint"]
        if self.usage is not None:
            body["usage"] = self.usage
        return body


def _add_tool_calls(message: dict, deltas: list[dict]) -> None:
    calls = message.setdefault("tool_calls", [])
    for call in deltas:
        position = call.get("index", len(calls))
        while len(calls) <= position:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        target = calls[position]
        if call.get("id"):
            target["id"] = call["id"]
        if call.get("type"):
            target["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            target["function"]["name"] += function["name"]
        if function.get("arguments"):
            target["function"]["arguments"] += function["arguments"]


async def _completion_as_sse(completion: dict) -> AsyncIterator[bytes]:
    """One JSON completion told as a stream: a chunk per choice, then [DONE]."""
    for choice in completion.get("choices", []):
        chunk = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
                 "created": completion.get("created", int(time.time())), "model": completion.get("model", ""),
                 "choices": [{"index": choice.get("index", 0), "delta": choice.get("message", {}),
                              "finish_reason": choice.get("finish_reason")}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def sse_error_event(status: int, message: str, code: str) -> bytes:
    return f"data: {json.dumps(error_body_for_status(status, message, code=code))}\n\n".encode()


def _json_or_error(status: int, raw: bytes) -> dict:
    try:
        body = loads(raw)
    except ValueError:
        body = None
    if status < 400:
        if not isinstance(body, dict):
            raise OpenAIError(502, "The upstream answered with a body that is not JSON.", code="upstream_bad_response")
        return body
    # Normalise the upstream's error to the OpenAI shape (vLLM versions differ here).
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return _openai_error(status, body["error"])
    message = body.get("message") if isinstance(body, dict) else _text(raw)[:500]
    return error_body_for_status(status, str(message or f"HTTP {status}"))


def _openai_error(status: int, error: dict) -> dict:
    """An upstream's {"error": {...}} with OpenAI's fields: vLLM names its exception class as the
    `type` ("NotFoundError") and puts the HTTP status in `code`, where OpenAI's clients expect an
    error type and a string code (OpenAI's types are snake_case: a cloud upstream's own error,
    such as "insufficient_quota", passes unchanged)."""
    kind, code = error.get("type"), error.get("code")
    if isinstance(kind, str) and kind.islower() and (code is None or isinstance(code, str)):
        return {"error": error}
    code = code if isinstance(code, str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    if code is None and status == 404 and param == "model":
        code = "model_not_found"
    return error_body_for_status(status, str(error.get("message") or f"HTTP {status}"), code=code, param=param)


def make_upstream(tier: Tier, base_url: str, api_key: str, model: str, timeout: float, settings) -> Upstream:
    """One model server: its pooled connections (ai_service.transport.HTTPPool) and its own breaker."""
    return Upstream(tier, base_url, api_key, model, timeout, settings.llm_request_deadline_sec,
                    CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_sec),
                    HTTPPool(base_url, connect_timeout=min(timeout, 5.0)))


def build_upstreams(settings, metrics: ServiceMetrics) -> UpstreamRouter:
    """Every upstream is built here (one place): the local vLLM, and the cloud tier when configured."""
    from ai_service.replica_pool import ReplicaPool, first_local_url, pool_wanted

    def local(url: str) -> Upstream:
        return make_upstream(Tier.LOCAL, url, settings.llm_api_key_local, settings.llm_model_local,
                             settings.llm_local_timeout_sec, settings)

    upstreams = {Tier.LOCAL: local(first_local_url(settings))}  # LLM_BASE_URL_LOCAL may list several replicas
    if settings.cloud_configured:
        upstreams[Tier.CLOUD] = make_upstream(Tier.CLOUD, settings.llm_base_url_cloud,
                                              settings.llm_api_key_cloud or "none", settings.llm_model_cloud,
                                              settings.llm_cloud_timeout_sec, settings)
    router = UpstreamRouter(upstreams, UpstreamMetrics(metrics))
    if pool_wanted(settings):
        router.pool = ReplicaPool(settings, metrics, local, first_upstream=upstreams[Tier.LOCAL])
    return router
