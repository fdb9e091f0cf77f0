"""Carries out a route plan over real HTTP: tries the tiers in order, applies timeouts,
breakers and fallback rules from ai_service.routing, and streams without buffering."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from ai_service.routing import (
    STATUS_BY_FAILURE,
    CircuitBreaker,
    Failure,
    RoutePlan,
    Tier,
    classify_status,
    should_fall_back,
)
from common.errors import OpenAIError, error_body_for_status
from common.http import make_client, request_id_headers
from common.metrics import ServiceMetrics

log = logging.getLogger("ai_service.upstreams")


@dataclass
class Upstream:
    tier: Tier
    base_url: str
    api_key: str
    model: str
    timeout: float
    breaker: CircuitBreaker
    client: httpx.AsyncClient

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}", **request_id_headers()}


@dataclass
class Served:
    """A successful (or client-error) answer from one tier."""

    tier: Tier
    model: str
    status: int
    body: dict | None = None  # non-streamed
    chunks: AsyncIterator[bytes] | None = None  # streamed


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


class UpstreamRouter:
    def __init__(self, upstreams: dict[Tier, Upstream], metrics: UpstreamMetrics):
        self.upstreams = upstreams
        self.metrics = metrics

    async def aclose(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.client.aclose()

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
            outcome = await self._attempt(upstream, {**body, "model": model, "stream": stream}, stream)
            if isinstance(outcome, Served):
                self.metrics.served.labels(tier.value, str(outcome.status)).inc()
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
        stream_label = "true" if stream else "false"
        if not upstream.breaker.allow_request():
            self.metrics.attempts.labels(upstream.tier.value, Failure.CIRCUIT_OPEN.value, stream_label).inc()
            return Failure.CIRCUIT_OPEN, "circuit breaker open"
        started = time.perf_counter()
        response: httpx.Response | None = None
        try:
            request = upstream.client.build_request("POST", "/chat/completions", json=body, headers=upstream.headers())
            # One deadline for the whole answer (non-stream) or for the first chunk (stream).
            async with asyncio.timeout(upstream.timeout):
                response = await upstream.client.send(request, stream=True)
                failure = classify_status(response.status_code)
                if failure is not None or not stream:
                    await response.aread()
                    await response.aclose()
                else:
                    chunks = response.aiter_bytes()
                    first_chunk = await anext(chunks)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return self._failed(upstream, response, Failure.TIMEOUT, f"no answer within {upstream.timeout:g}s", stream_label, exc)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, StopAsyncIteration) as exc:
            return self._failed(upstream, response, Failure.CONNECT, type(exc).__name__, stream_label, exc)

        self.metrics.latency.labels(upstream.tier.value, stream_label).observe(time.perf_counter() - started)
        if failure is Failure.SERVER_ERROR:
            upstream.breaker.record_failure()
            self.metrics.attempts.labels(upstream.tier.value, failure.value, stream_label).inc()
            return failure, f"HTTP {response.status_code}"
        # A 4xx means the upstream is healthy and the request is wrong: returned, not retried.
        upstream.breaker.record_success()
        self.metrics.attempts.labels(upstream.tier.value, failure.value if failure else "ok", stream_label).inc()
        if failure is Failure.CLIENT_ERROR or not stream:
            return Served(upstream.tier, body["model"], response.status_code, body=_json_or_error(response))
        return Served(upstream.tier, body["model"], response.status_code,
                      chunks=self._relay(upstream, response, first_chunk, chunks))

    def _failed(self, upstream, response, failure, detail, stream_label, exc) -> tuple[Failure, str]:
        upstream.breaker.record_failure()
        self.metrics.attempts.labels(upstream.tier.value, failure.value, stream_label).inc()
        if response is not None:
            asyncio.ensure_future(response.aclose())
        log.info("upstream attempt failed", extra={"upstream": upstream.tier.value, "failure": failure.value,
                                                   "error": repr(exc)[:200]})
        return failure, detail

    async def _relay(self, upstream: Upstream, response: httpx.Response, first_chunk: bytes,
                     chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Yields the upstream's SSE bytes as they come. After the first byte there is no
        fallback: a failure ends the stream with an in-band OpenAI error event."""
        try:
            yield first_chunk
            async for chunk in chunks:
                yield chunk
        except (httpx.HTTPError, TimeoutError) as exc:
            upstream.breaker.record_failure()
            self.metrics.attempts.labels(upstream.tier.value, "stream_interrupted", "true").inc()
            log.warning("stream interrupted", extra={"upstream": upstream.tier.value, "error": repr(exc)[:200]})
            yield sse_error_event(502, f"The {upstream.tier.value} upstream failed mid-stream: {type(exc).__name__}.",
                                  code="upstream_stream_interrupted")
        finally:
            await response.aclose()


def sse_error_event(status: int, message: str, code: str) -> bytes:
    return f"data: {json.dumps(error_body_for_status(status, message, code=code))}\n\n".encode()


def _json_or_error(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400:
        if not isinstance(body, dict):
            raise OpenAIError(502, "The upstream answered with a body that is not JSON.", code="upstream_bad_response")
        return body
    # Normalise the upstream's error to the OpenAI shape (vLLM versions differ here).
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body
    message = body.get("message") if isinstance(body, dict) else response.text[:500]
    return error_body_for_status(response.status_code, str(message or f"HTTP {response.status_code}"))


def build_upstreams(settings, metrics: ServiceMetrics) -> UpstreamRouter:
    upstreams = {
        Tier.LOCAL: Upstream(
            Tier.LOCAL, settings.llm_base_url_local, settings.llm_api_key_local, settings.llm_model_local,
            settings.llm_local_timeout_sec,
            CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_sec),
            make_client(settings.llm_base_url_local, settings.llm_local_timeout_sec),
        ),
    }
    if settings.cloud_configured:
        upstreams[Tier.CLOUD] = Upstream(
            Tier.CLOUD, settings.llm_base_url_cloud, settings.llm_api_key_cloud or "none", settings.llm_model_cloud,
            settings.llm_cloud_timeout_sec,
            CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_reset_sec),
            make_client(settings.llm_base_url_cloud, settings.llm_cloud_timeout_sec),
        )
    return UpstreamRouter(upstreams, UpstreamMetrics(metrics))
