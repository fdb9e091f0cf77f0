"""Several local vLLM replicas behind one local tier: polling, discovery, on-demand adapter loads.

The decisions are ai_service/balancer.py's (pure); this module does the I/O around them:
- every LLM_REPLICA_POLL_SEC it probes each replica's /health, scrapes its /metrics (running and
  waiting requests, KV-cache use) and reads its /v1/models (which adapters it has loaded); with a
  `dns+` discovery URL it first resolves the name again, adding and dropping replicas;
- a replica whose probe fails is taken out of the first choices; when its probe answers again, it is
  put back and its circuit breaker closed (a breaker opened by failing chats while /health still
  answered keeps its own half-open trial, as for a single upstream);
- one request: the balancer ranks the replicas; an adapter that the chosen replica lacks is loaded
  there through the replica's llm_server control API (POST /v1/adapters/load), which resolves a family
  to its newest version on the adapters volume and keeps weights confined to that volume; the
  attempt runs with that replica's own breaker, timeouts and connection pool; a failure before the
  first byte moves on to the next replica, and a stream, once started, stays on its replica;
- the replica's in-flight count is held by a `Lease` from the pick to the end of the exchange and
  released exactly once however it ends: an answer, a failure, an exception, a cancellation, a stream
  read to its end or closed, or a stream never read or dropped half-way because the client went away
  (then when the request's task ends).

Used only when LLM_BASE_URL_LOCAL names several replicas, a dns+ discovery URL, or LLM_REPLICA_CONTROL_URLS is set
(on-demand loading): a single local upstream keeps the plain single-tier path.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter, Gauge

from ai_service.balancer import (Balancer, BalancerConfig, LocalUpstreams, Replica, control_url_for,
                                 models_of, parse_control_urls, parse_local_upstreams, parse_vllm_metrics,
                                 url_with_host)
from ai_service.routing import Failure, should_fall_back
from common.auth import SERVICE_TOKEN_HEADER
from common.http import request_id_headers
from common.logging import get_logger
from common.metrics import ServiceMetrics
from common.probe import ProbeResult, describe_error, probe, stop_task

log = get_logger("ai_service.replicas")

# The session a request belongs to (the end user's id, set by ai_service.auth.gateway_caller): a
# session is kept on one replica where load allows, so vLLM's prefix cache serves its next turn.
session_key_var: contextvars.ContextVar[str] = contextvars.ContextVar("replica_session", default="")

ADAPTER_MISS_TTL_SEC = 30.0  # an adapter llm_server could not load is not asked for again this soon
PROBE_TIMEOUT_SEC = 2.0
ADAPTER_LOAD_TIMEOUT_SEC = 120.0

Attempt = Callable[[Any, str], Awaitable[Any]]  # (upstream, model) -> Served | (Failure, detail)


def pool_wanted(settings) -> bool:
    local = parse_local_upstreams(settings.llm_base_url_local)
    return local.discovered or len(local.urls) > 1 or bool(settings.llm_replica_control_urls.strip())


def first_local_url(settings) -> str:
    """The URL of the single local upstream (the first replica; a discovery URL's own name)."""
    local = parse_local_upstreams(settings.llm_base_url_local)
    return local.discovery_url or local.urls[0]


class PoolMetrics:
    def __init__(self, metrics: ServiceMetrics):
        registry = metrics.registry
        self.up = Gauge("tutorstack_replica_up", "1 when the replica's last health probe answered", ["replica"],
                        registry=registry)
        self.breaker_open = Gauge("tutorstack_replica_breaker_open", "1 while the replica's circuit breaker is open",
                                  ["replica"], registry=registry)
        self.in_flight = Gauge("tutorstack_replica_in_flight", "Requests this ai_service has on the replica",
                               ["replica"], registry=registry)
        self.engine = Gauge("tutorstack_replica_engine_requests", "vLLM's own running/waiting requests, last scrape",
                            ["replica", "state"], registry=registry)
        self.kv_cache = Gauge("tutorstack_replica_kv_cache_usage", "vLLM's KV-cache use (0..1), last scrape",
                              ["replica"], registry=registry)
        self.adapters = Gauge("tutorstack_replica_adapters", "LoRA adapters loaded on the replica", ["replica"],
                              registry=registry)
        self.replicas = Gauge("tutorstack_replicas", "Known local replicas, by state", ["state"], registry=registry)
        self.picks = Counter("tutorstack_replica_requests_total", "Attempts per replica and outcome",
                             ["replica", "outcome"], registry=registry)
        self.adapter_loads = Counter("tutorstack_replica_adapter_loads_total",
                                     "On-demand adapter loads per replica and outcome", ["replica", "outcome"],
                                     registry=registry)

    def forget(self, replica: str) -> None:
        for gauge in (self.up, self.breaker_open, self.in_flight, self.kv_cache, self.adapters):
            try:
                gauge.remove(replica)
            except KeyError:
                pass
        for state in ("running", "waiting"):
            try:
                self.engine.remove(replica, state)
            except KeyError:
                pass


class ReplicaPool:
    def __init__(self, settings, metrics: ServiceMetrics, make_upstream: Callable[[str], Any],
                 first_upstream: Any = None):
        self.settings = settings
        self.local: LocalUpstreams = parse_local_upstreams(settings.llm_base_url_local)
        self.control_urls = parse_control_urls(settings.llm_replica_control_urls)
        self.base_model = settings.llm_model_local
        self.poll_sec = settings.llm_replica_poll_sec
        self.on_demand = settings.llm_load_adapters_on_demand
        self.balancer = Balancer(BalancerConfig(adapter_affinity=settings.llm_adapter_affinity,
                                                spill_margin=settings.llm_affinity_spill_margin,
                                                sticky_sessions=settings.llm_sticky_sessions))
        self.metrics = PoolMetrics(metrics)
        self._make_upstream = make_upstream
        self.replicas: dict[str, Replica] = {}
        self.upstreams: dict[str, Any] = {}
        self._retired: list[tuple[Replica, Any]] = []  # dropped by discovery, closed once idle
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(PROBE_TIMEOUT_SEC, connect=1.0))
        self._headers = {"authorization": f"Bearer {settings.llm_api_key_local}"}
        self._control_headers = ({SERVICE_TOKEN_HEADER: settings.llm_server_api_token}
                                 if settings.llm_server_api_token else {})
        self._loads: dict[tuple[str, str], asyncio.Lock] = {}
        self._misses: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task | None = None
        self._polled_once: asyncio.Event | None = None
        for index, url in enumerate(self.local.urls):
            upstream = first_upstream if index == 0 and first_upstream is not None else make_upstream(url)
            self._add(url, index, upstream)

    # --- life cycle ---------------------------------------------------------------------
    def _add(self, url: str, index: int, upstream: Any) -> Replica:
        replica = Replica(url, control_url_for(url, index, self.control_urls, self.local.discovered),
                          breaker=upstream.breaker)
        self.replicas[url] = replica
        self.upstreams[url] = upstream
        log.info("replica added", extra={"replica": url, "control_url": replica.control_url})
        return replica

    async def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._polled_once = asyncio.Event()
            self._task = asyncio.create_task(self._poll_forever(), name="replica-poller")
        if not self.replicas:  # discovery: the first resolution must happen before the first request
            await self.refresh()

    async def aclose(self) -> None:
        await stop_task(self._task)
        await self._http.aclose()
        for upstream in [*self.upstreams.values(), *(u for _, u in self._retired)]:
            close = getattr(upstream.client, "aclose", None) or getattr(upstream.client, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    pass

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a poll must never kill the poller
                log.warning("replica poll failed", extra={"error": repr(exc)[:200]})
            if self._polled_once is not None:
                self._polled_once.set()
            await asyncio.sleep(self.poll_sec)

    # --- polling ------------------------------------------------------------------------
    async def refresh(self) -> None:
        if self.local.discovered:
            await self._discover()
        await asyncio.gather(*(self._probe(r) for r in list(self.replicas.values())))
        self._close_idle_retired()
        self._export()

    async def _discover(self) -> None:
        host = urlsplit(self.local.discovery_url).hostname or ""
        port = urlsplit(self.local.discovery_url).port or 80
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=1)  # SOCK_STREAM
        except OSError as exc:
            log.warning("replica discovery failed", extra={"host": host, "error": repr(exc)[:200]})
            return  # keep the replicas we know: a DNS hiccup must not empty the pool
        addresses = sorted({info[4][0] for info in infos})
        wanted = [url_with_host(self.local.discovery_url, a) for a in addresses]
        for url in wanted:
            if url not in self.replicas:
                self._add(url, 0, self._make_upstream(url))
        for url in [u for u in self.replicas if u not in wanted]:
            replica = self.replicas.pop(url)
            self._retired.append((replica, self.upstreams.pop(url)))
            self.metrics.forget(replica.name)
            log.info("replica gone from discovery", extra={"replica": url})

    def _close_idle_retired(self) -> None:
        keep = []
        for replica, upstream in self._retired:
            if replica.in_flight > 0:
                keep.append((replica, upstream))  # a stream still runs there: never cut mid-way
                continue
            close = getattr(upstream.client, "aclose", None) or getattr(upstream.client, "close", None)
            if close is not None:
                asyncio.get_running_loop().create_task(close())
        self._retired = keep

    async def _probe(self, replica: Replica) -> None:
        root = replica.url.removesuffix("/v1")
        health, metrics, models = await asyncio.gather(
            probe(self._http, f"{root}/health", PROBE_TIMEOUT_SEC, connect_timeout=1.0),
            self._http.get(f"{root}/metrics"),
            self._http.get(f"{replica.url}/models", headers=self._headers), return_exceptions=True)
        ok = isinstance(health, ProbeResult) and health.ok
        if ok and not replica.up:
            log.info("replica recovered: back in rotation", extra={"replica": replica.url})
            if replica.breaker.state != "closed":
                replica.breaker.record_success()
        elif not ok and replica.up:
            log.warning("replica down: out of rotation", extra={"replica": replica.url,
                                                                 "error": _probe_error(health)})
        replica.up = ok
        if not ok:
            replica.last_error = _probe_error(health)
            return
        if isinstance(metrics, httpx.Response) and metrics.status_code == 200:
            replica.load = parse_vllm_metrics(metrics.text)
            replica.in_flight_at_scrape = replica.in_flight
            replica.scraped = True
        if isinstance(models, httpx.Response) and models.status_code == 200:
            try:
                body = models.json()
            except ValueError:
                body = {}
            _, replica.adapters = models_of(body)
            replica.models = [m for m in body.get("data", []) if isinstance(m, dict)]

    def _export(self) -> None:
        states = {"up": 0, "down": 0, "breaker_open": 0}
        for replica in self.replicas.values():
            name = replica.name
            self.metrics.up.labels(name).set(1 if replica.up else 0)
            self.metrics.breaker_open.labels(name).set(1 if replica.breaker.state == "open" else 0)
            self.metrics.in_flight.labels(name).set(replica.in_flight)
            self.metrics.engine.labels(name, "running").set(replica.load.running)
            self.metrics.engine.labels(name, "waiting").set(replica.load.waiting)
            self.metrics.kv_cache.labels(name).set(replica.load.kv_cache_usage)
            self.metrics.adapters.labels(name).set(len(replica.adapters))
            states["up" if replica.up else "down"] += 1
            states["breaker_open"] += replica.breaker.state == "open"
        for state, count in states.items():
            self.metrics.replicas.labels(state).set(count)

    # --- models -------------------------------------------------------------------------
    async def models(self, *, fresh: bool = False) -> list[dict]:
        """Every model any replica serves (base model and adapters), first replica's entry first.
        Raises when no replica answers (readiness: the local tier is down)."""
        await self.ensure_started()
        replicas = list(self.replicas.values())
        if fresh or not any(r.models for r in replicas):
            results = await asyncio.gather(
                *(self._http.get(f"{r.url}/models", headers=self._headers) for r in replicas),
                return_exceptions=True)
            answered = 0
            for replica, result in zip(replicas, results):
                if isinstance(result, httpx.Response) and result.status_code == 200:
                    body = result.json()
                    _, replica.adapters = models_of(body)
                    replica.models = [m for m in body.get("data", []) if isinstance(m, dict)]
                    answered += 1
            if not answered:
                raise RuntimeError(f"no local replica answered /v1/models ({len(replicas)} known): "
                                   + "; ".join(describe_error(r) for r in results)[:300])
        seen: dict[str, dict] = {}
        for replica in replicas:
            if replica.up or fresh:
                for model in replica.models:
                    seen.setdefault(model.get("id", ""), model)
        return list(seen.values())

    def snapshot(self) -> dict:
        return {"discovery_url": self.local.discovery_url, "poll_sec": self.poll_sec,
                "adapter_affinity": self.balancer.config.adapter_affinity,
                "sticky_sessions": self.balancer.config.sticky_sessions,
                "load_adapters_on_demand": self.on_demand and bool(self.control_urls),
                "replicas": [r.snapshot() for r in self.replicas.values()]}

    # --- one request --------------------------------------------------------------------
    def lease(self, replica: Replica) -> "Lease":
        """The replica counted in flight for the current request until the lease is released."""
        return Lease(self, replica)

    async def serve(self, requested_model: str, attempt: Attempt) -> Any:
        """Served from the best replica that can, or (Failure, detail) of the last one tried."""
        await self.ensure_started()
        replicas = list(self.replicas.values())
        if not replicas:
            return Failure.CONNECT, f"no replica found for {self.local.discovery_url}"
        model = self.balancer.resolve(requested_model, self.base_model, replicas)
        choices = self.balancer.rank(replicas, model, self.base_model, session_key_var.get())
        tried: list[str] = []
        failure, detail = Failure.CONNECT, "no replica tried"
        for choice in choices:
            replica = choice.replica
            # Counted from the pick on, adapter load included, so a burst sees it at once and spreads;
            # released in `finally` on every way out, except a stream, which takes the lease with it.
            lease: Lease | None = self.lease(replica)
            try:
                name = model
                if not choice.has_adapter:
                    name = await self.load_adapter(replica, model) or model
                outcome = await attempt(self.upstreams[replica.url], name)
                if not isinstance(outcome, tuple):  # Served (an answer, or the client's own 4xx)
                    replica.served += 1
                    self.metrics.picks.labels(replica.name, "ok").inc()
                    outcome.replica = replica.name
                    if outcome.chunks is not None:  # the stream stays here, and holds the replica until it ends
                        outcome.chunks, lease = LeasedStream(outcome.chunks, lease), None
                    return outcome
            finally:
                if lease is not None:
                    lease.release()
            failure, detail = outcome
            replica.failed += 1
            replica.last_error = f"{failure.value}: {detail}"[:300]
            self.metrics.picks.labels(replica.name, failure.value).inc()
            tried.append(f"{replica.name} {failure.value} ({detail})")
            if not should_fall_back(failure, first_byte_sent=False):
                break
            log.warning("replica failed, trying the next", extra={"replica": replica.url, "failure": failure.value,
                                                                  "detail": detail[:200]})
        return failure, "; ".join(tried) if len(tried) > 1 else detail

    def _acquire(self, replica: Replica) -> None:
        replica.in_flight += 1
        self.metrics.in_flight.labels(replica.name).set(replica.in_flight)

    def _release(self, replica: Replica) -> None:
        replica.in_flight = max(0, replica.in_flight - 1)
        self.metrics.in_flight.labels(replica.name).set(replica.in_flight)

    async def load_adapter(self, replica: Replica, model: str) -> str | None:
        """Loads `model` (an adapter, or a family for its newest version) into the replica through its
        llm_server; the name that now serves it, or None (no control API, unknown adapter, error)."""
        if not (self.on_demand and replica.control_url and model):
            return None
        key = (replica.url, model)
        if time.monotonic() < self._misses.get(key, 0.0):
            return None
        lock = self._loads.setdefault(key, asyncio.Lock())
        async with lock:
            if model in replica.adapters:  # a concurrent request loaded it while we waited
                return model
            try:
                response = await self._http.post(
                    f"{replica.control_url}/v1/adapters/load", json={"name": model},
                    headers={**self._control_headers, **request_id_headers()}, timeout=ADAPTER_LOAD_TIMEOUT_SEC)
            except httpx.HTTPError as exc:
                self.metrics.adapter_loads.labels(replica.name, "unreachable").inc()
                log.warning("adapter load: control API unreachable",
                            extra={"replica": replica.url, "adapter": model, "error": repr(exc)[:200]})
                self._misses[key] = time.monotonic() + ADAPTER_MISS_TTL_SEC / 6
                return None
            if response.status_code != 200:
                self.metrics.adapter_loads.labels(replica.name, f"http_{response.status_code}").inc()
                log.info("adapter load refused", extra={"replica": replica.url, "adapter": model,
                                                        "status": response.status_code, "body": response.text[:200]})
                self._misses[key] = time.monotonic() + ADAPTER_MISS_TTL_SEC
                return None
            name = response.json().get("name") or model
            replica.adapters.add(name)
            self.metrics.adapter_loads.labels(replica.name, "ok").inc()
            self.metrics.adapters.labels(replica.name).set(len(replica.adapters))
            log.info("adapter loaded on demand", extra={"replica": replica.url, "adapter": name})
            return name


class Lease:
    """One request's hold on one replica's in-flight count: taken at the pick, released exactly once.

    The request's task is watched too: a lease still held when that task ends (a stream never read
    because the client went away before the first chunk, a stream dropped half-way, an exception between
    the answer and the response) is released then, so no path leaves the count up. A stream must be
    relayed by the task that picked the replica (the request's own task, as in ai_service)."""

    __slots__ = ("_pool", "replica", "released", "_task")

    def __init__(self, pool: ReplicaPool, replica: Replica):
        self._pool = pool
        self.replica = replica
        self.released = False
        pool._acquire(replica)
        try:
            self._task: asyncio.Task | None = asyncio.current_task()
        except RuntimeError:  # no running loop: released explicitly only
            self._task = None
        if self._task is not None:
            self._task.add_done_callback(self._task_done)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._task is not None:
            self._task.remove_done_callback(self._task_done)
            self._task = None
        self._pool._release(self.replica)

    def _task_done(self, task: asyncio.Task) -> None:
        if not self.released:
            log.info("replica released when its request ended", extra={"replica": self.replica.url,
                                                                        "cancelled": task.cancelled()})
        self.release()


class LeasedStream:
    """A streamed answer holding its replica's lease: released when the stream ends, fails, is cancelled
    or closed (closing releases even before the first chunk), or, dropped unread, when its request ends."""

    __slots__ = ("_chunks", "lease")

    def __init__(self, chunks: AsyncIterator[bytes], lease: Lease):
        self._chunks = chunks
        self.lease = lease

    def __aiter__(self) -> "LeasedStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:  # the end (StopAsyncIteration), an upstream error, a cancellation
            self.lease.release()
            raise

    async def aclose(self) -> None:
        self.lease.release()
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


def _probe_error(result: object) -> str:
    if isinstance(result, ProbeResult):
        return result.error or ""
    return describe_error(result)  # probe() never raises; gather's return_exceptions covers a bug
