"""The health service (port 8005): the platform's separate health-check process.

Polls every target's readiness URL (HEALTH_TARGETS) every HEALTH_INTERVAL_SEC, concurrently, with
HEALTH_CHECK_TIMEOUT_SEC each; keeps the last HEALTH_HISTORY_SIZE checks per service in Redis.

Routes (all need HEALTH_API_TOKEN; ai_service forwards the /v1 ones from the gateway, any valid key):
  GET /v1/health                each service's status, latency and last change (?history=N checks)
  GET /v1/health/status         the same as an HTML page for operators
  GET /status                   the same page, on the service itself
Metrics: tutorstack_service_up{service} (1 ready, 0 not), tutorstack_health_check_seconds{service}.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from prometheus_client import Gauge

from common.app import create_service_app
from common.auth import require_service_token
from common.errors import OpenAIError
from common.logging import get_logger
from services.health.page import render
from services.health.poller import Poller, ServiceState, overall_status
from services.health.schemas import CheckRecord, HealthReport, ServiceHealth
from services.health.settings import HealthSettings
from services.health.store import HealthStore

log = get_logger("health")
router = APIRouter(dependencies=[Depends(require_service_token)])

CHECK_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc)


async def build_report(request: Request, history: int) -> HealthReport:
    poller: Poller = request.app.state.poller
    store: HealthStore = request.app.state.store
    settings: HealthSettings = request.app.state.settings
    if history > settings.history_size:
        raise OpenAIError(400, f"history must be at most {settings.history_size}.", code="invalid_request",
                          param="history")
    services = []
    for state in poller.states.values():
        records: list[CheckRecord] = []
        if history:
            try:
                records = [_record(c) for c in await store.history(state.target.name, history)]
            except Exception as exc:  # Redis down: the current status still answers
                log.warning("health history unavailable: %s", exc)
        services.append(_service(state, records))
    return HealthReport(status=overall_status(list(poller.states.values())), checked_at=_dt(poller.last_round_at),
                        interval_sec=settings.interval_sec, services=services)


def _record(data: dict) -> CheckRecord:
    return CheckRecord(status=data["status"], at=_dt(data["at"]), latency_ms=data.get("latency_ms"),
                       http_status=data.get("http_status"), error=data.get("error"), failing=data.get("failing") or [])


def _service(state: ServiceState, history: list[CheckRecord]) -> ServiceHealth:
    check = state.last_check
    return ServiceHealth(
        name=state.target.name, status=state.status, optional=state.target.optional,
        latency_ms=check.latency_ms if check else None, last_change=_dt(state.last_change),
        last_checked=_dt(check.at) if check else None, http_status=check.http_status if check else None,
        error=check.error if check else None, failing=check.failing if check else [], history=history)


@router.get("/v1/health", response_model=HealthReport)
async def health(request: Request, history: int = Query(0, ge=0, description="Recent checks per service")):
    return await build_report(request, history)


@router.get("/v1/health/status", response_class=HTMLResponse, responses={200: {
    "description": "An HTML page for operators (no JSON): each service's status, latency and recent checks; "
                   "GET /v1/health has the same report as JSON",
    "content": {"text/html": {"schema": {"type": "string", "contentMediaType": "text/html"}}}}})
async def status_page_v1(request: Request, history: int = Query(30, ge=0)):
    history = min(history, request.app.state.settings.history_size)
    return HTMLResponse(render(await build_report(request, history),
                               refresh_sec=max(2, int(request.app.state.settings.interval_sec))))


@router.get("/status", response_class=HTMLResponse)
async def status_page(request: Request, history: int = Query(30, ge=0)):
    return await status_page_v1(request, history)


def create_app(settings: HealthSettings | None = None) -> FastAPI:
    settings = settings or HealthSettings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per check; changes are logged
    store = HealthStore.from_url(settings.redis_url, prefix=settings.redis_prefix, history_size=settings.history_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller: Poller = app.state.poller
        await poller.restore()
        poller.start()
        try:
            yield
        finally:
            await poller.stop()
            await store.aclose()

    async def polling() -> None:
        poller = app.state.poller
        if poller.rounds == 0 or poller._task is None or poller._task.done():
            raise RuntimeError("the poller has not completed a round")

    app = create_service_app("health", settings, readiness={"poller": polling},
                             optional_readiness={"redis": store.ping}, lifespan=lifespan)
    registry = app.state.metrics.registry
    up = Gauge("tutorstack_service_up", "1 when the service answered its readiness check, 0 when not",
               ["service"], registry=registry)
    seconds = app.state.metrics.histogram("tutorstack_health_check_seconds", "Readiness check latency per service",
                                          ["service"], buckets=CHECK_BUCKETS)
    app.state.store = store
    app.state.poller = Poller(settings.target_list(), store=store, interval_sec=settings.interval_sec,
                              timeout_sec=settings.timeout_sec, up_gauge=up, latency_histogram=seconds)
    app.include_router(router)
    return app
