"""The web console (port 8090): a small server-rendered shell with light JS, every asset local.

The browser logs in with an API key (kept in sessionStorage) and calls the public API through
this service's same-origin pass-through `/v1/*` -> the gateway (CONSOLE_GATEWAY_URL), with the
key's own Authorization header: the console holds no credential of its own and sees what the
key's role may see (the gateway and the services enforce it; the page hides what would be refused).
`/console/metrics` serves requests/s and latency sampled from the services' /metrics (admins).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from common.app import create_service_app
from common.errors import OpenAIError
from common.logging import get_logger
from services.console.metrics import MetricsHistory, totals
from services.console.settings import ConsoleSettings

log = get_logger("console")
STATIC = Path(__file__).parent / "static"
PASSED = ("authorization", "content-type", "accept", "x-data-classification")
RETURNED = ("content-type", "cache-control", "x-request-id", "x-tutorstack-adapter", "x-tutorstack-ab-variant",
            "x-tutorstack-upstream", "retry-after")


async def sample_metrics(app: FastAPI) -> None:
    settings: ConsoleSettings = app.state.settings
    history: MetricsHistory = app.state.history
    async with httpx.AsyncClient(timeout=3.0) as client:
        while True:
            for name, url in settings.target_list():
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    history.add(name, totals(response.text))
                except Exception as exc:  # a service that is down has no point this round
                    log.debug("metrics sample failed", extra={"service": name, "error": str(exc)})
            await asyncio.sleep(settings.metrics_interval_sec)


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = httpx.AsyncClient(base_url=settings.gateway_url.rstrip("/"),
                                             timeout=httpx.Timeout(settings.request_timeout_sec, connect=5.0))
        task = asyncio.create_task(sample_metrics(app))
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await app.state.client.aclose()

    async def gateway_ready():
        response = await app.state.client.get("/healthz", timeout=2.0)
        response.raise_for_status()

    app = create_service_app("console", settings, lifespan=lifespan, optional_readiness={"gateway": gateway_ready})
    app.state.history = MetricsHistory(settings.metrics_history)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    @app.get("/console/config", include_in_schema=False)
    async def config() -> dict:
        return {"grafana_url": settings.grafana_url, "metrics_targets": [n for n, _ in settings.target_list()]}

    @app.get("/console/metrics", include_in_schema=False)
    async def metrics(request: Request):
        # admins only: the gateway tells us the key's role
        me = await app.state.client.get("/v1/me", headers={"authorization": request.headers.get("authorization", "")})
        if me.status_code != 200:
            return JSONResponse(me.json() if me.headers.get("content-type", "").startswith("application/json")
                                else {"error": {"message": "login failed"}}, status_code=me.status_code)
        if me.json().get("role") != "admin":
            raise OpenAIError(403, "The metrics view needs an admin key.", code="forbidden")
        return app.state.history.snapshot()

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def passthrough(path: str, request: Request):
        client: httpx.AsyncClient = app.state.client
        headers = {k: request.headers[k] for k in PASSED if k in request.headers}
        upstream_request = client.build_request(request.method, f"/v1/{path}", params=request.query_params,
                                                content=await request.body(), headers=headers)
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            raise OpenAIError(503, f"The gateway is unreachable: {type(exc).__name__}.", code="gateway_unavailable")
        returned = {k: upstream.headers[k] for k in RETURNED if k in upstream.headers}
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=returned,
                                 background=BackgroundTask(upstream.aclose))

    return app
