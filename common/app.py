"""The service app factory: every tutorstack service is built on this.

It adds /healthz (liveness), /readyz (dependency checks), /metrics (Prometheus),
request ids, JSON logs and OpenAI-shaped errors, so routers only hold their own logic.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import OpenAIError, error_body_for_status
from common.logging import configure_logging
from common.metrics import ServiceMetrics
from common.middleware import RequestContextMiddleware
from common.settings import ServiceSettings

log = logging.getLogger("common.app")

ReadinessCheck = Callable[[], Awaitable[object]]


@dataclass
class Readiness:
    """Checks run by /readyz. A failing required check makes the service not ready (503);
    a failing optional one is reported as degraded while the service stays ready."""

    required: dict[str, ReadinessCheck]
    optional: dict[str, ReadinessCheck]


def create_service_app(
    name: str,
    settings: ServiceSettings,
    *,
    readiness: dict[str, ReadinessCheck] | None = None,
    optional_readiness: dict[str, ReadinessCheck] | None = None,
    lifespan=None,
    configure_logs: bool = True,
) -> FastAPI:
    if configure_logs:
        configure_logging(name, settings.log_level)
    app = FastAPI(title=f"tutorstack {name}", lifespan=lifespan, telemetry=fastapi_telemetry())
    app.state.settings = settings
    app.state.metrics = ServiceMetrics(name)
    app.state.readiness = Readiness(dict(readiness or {}), dict(optional_readiness or {}))
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics, router_app=app)
    install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "service": name}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = app.state.readiness
        required = await _run_checks(checks.required)
        optional = await _run_checks(checks.optional)
        ready = all(result == "ok" for result in required.values())
        degraded = [check for check, result in optional.items() if result != "ok"]
        body = {
            "status": "ready" if ready else "not_ready",
            "service": name,
            "checks": {**required, **optional},
            "degraded": degraded,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def fastapi_telemetry() -> dict | None:
    """FastAPI's own OpenTelemetry, decided once at start-up: on (FastAPI's defaults) where the environment
    configures OpenTelemetry (any OTEL_* or FASTAPI_OTEL_* variable), off otherwise. Left on, FastAPI asks
    the global OpenTelemetry providers on every request whether one was set up (environment lookups, about
    5% of a proxied chat's CPU), only to find none: the platform's metrics are Prometheus (/metrics)."""
    if any(name.startswith(("OTEL_", "FASTAPI_OTEL_")) for name in os.environ):
        return None
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


async def _run_checks(checks: dict[str, ReadinessCheck], timeout: float = 3.0) -> dict[str, str]:
    async def run_one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout)
            return "ok"
        except Exception as exc:  # a check's failure is a result, not an error
            return f"failed: {type(exc).__name__}: {exc}"[:300]

    names = list(checks)
    results = await asyncio.gather(*(run_one(checks[n]) for n in names))
    return dict(zip(names, results))


# FastAPI's HTTPException detail for a request body that fails to decode before JSON parsing
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
# A machine-readable `code` for the errors Starlette raises itself (no route, wrong method)
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = HTTP_ERROR_CODES.get(exc.status_code)
        if exc.status_code == 400 and message == FASTAPI_BODY_PARSE_ERROR:
            # FastAPI's answer to a body it could not decode at all (not UTF-8): say so, like bad JSON
            message, code = "Request body is not valid JSON (it must be UTF-8 text).", "invalid_json"
        return JSONResponse(error_body_for_status(exc.status_code, message, code=code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(error_body_for_status(400, "Request body is not valid JSON.", code="invalid_json"),
                                status_code=400)
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in errors[:5]
        )
        return JSONResponse(error_body_for_status(422, message, code="invalid_request", param=param), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body_for_status(500, "Internal server error."), status_code=500)
