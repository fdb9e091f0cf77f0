"""gateway app factory."""

from __future__ import annotations

from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from common.app import create_service_app
from common.errors import ERROR_TYPE_BY_STATUS
from common.http import make_client
from common.middleware import LabelledRoute
from gateway.auth import Gatekeeper
from gateway.keys import APIKeyStore, RecordSigner
from gateway import redis_pipe
from gateway.proxy import ProxyEndpoint
from gateway.ratelimit import RateLimiter
from gateway.routes import PUBLIC_ROUTES
from gateway.settings import GatewaySettings
from gateway.upstream import Upstream

_DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def public_openapi(app: FastAPI) -> dict:
    """An OpenAPI document of the public routes (the gateway forwards these and nothing else).
    Request and response bodies are those of ai_service and the services behind it."""
    error = {"description": "OpenAI-shaped error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    paths: dict = {}
    for route in PUBLIC_ROUTES:
        params = [{"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                  for part in route.path.split("/") if part.startswith("{")]
        for method in route.methods:
            operation = {
                "summary": route.summary,
                "security": [{"apiKey": []}],
                "parameters": params,
                "responses": {"200": {"description": "The service's answer"},
                              **{str(s): error for s in (400, 401, 404, 413, 422, 429, 502, 503, 504)}},
            }
            if method in ("POST", "PUT", "PATCH"):
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"type": "object"}}}}
            paths.setdefault(route.path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "tutorstack API", "version": "1",
                 "description": "OpenAI-compatible tutoring API. Send `Authorization: Bearer <API key>`."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string", "enum": sorted(set(
                    ERROR_TYPE_BY_STATUS.values()))}, "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]}}}}}},
        },
    }


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await app.state.upstream.aclose()
        await app.state.client.aclose()
        if app.state.gatekeeper.pipe is not None:
            await app.state.gatekeeper.pipe.aclose()
        await app.state.redis.aclose()

    app = create_service_app("gateway", settings, lifespan=lifespan)
    app.router.redirect_slashes = False  # /v1/models/ is not a route: 404, not a redirect
    if settings.expose_docs:
        schema = public_openapi(app)
        app.openapi = lambda: schema
    else:
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in _DOCS_PATHS]
        app.openapi_url = app.docs_url = app.redoc_url = None
    # No socket timeout in redis-py (a task and two timers per command): the key check, the one command per
    # request, is bounded by the gatekeeper's watchdog instead (gateway/auth.py); connecting still is by this.
    app.state.redis = aioredis.from_url(settings.redis_url, socket_timeout=None, socket_connect_timeout=5.0)
    app.state.keys = APIKeyStore(app.state.redis, RecordSigner(settings.key_signing_secret))
    app.state.limiter = RateLimiter(app.state.redis)
    app.state.gatekeeper = Gatekeeper(app.state.redis, app.state.keys, pipe=redis_pipe.PipelinedRedis(settings.redis_url)
                                      if redis_pipe.supports(settings.redis_url) else None)
    app.state.upstream = Upstream(settings.ai_service_url, settings.upstream_timeout_sec,
                                  settings.upstream_max_connections)
    app.state.client = make_client(settings.ai_service_url, 5.0, max_connections=4)  # readiness checks only

    async def redis_ready() -> None:
        await app.state.redis.ping()

    async def ai_service_ready() -> None:
        response = await app.state.client.get("/readyz", timeout=3.0)
        if response.status_code != 200:
            raise RuntimeError(f"ai_service /readyz answered {response.status_code}")

    app.state.readiness.required.update({"redis": redis_ready, "ai_service": ai_service_ready})
    # First in the router: every API request matches on its first tries, not after the service routes.
    app.router.routes[:0] = [LabelledRoute(route.path, ProxyEndpoint(route), methods=list(route.methods))
                             for route in PUBLIC_ROUTES]
    return app


def create_app_from_env() -> FastAPI:
    """The import-string factory uvicorn calls in each worker (`python -m gateway serve`). What start-up
    built is moved out of the garbage collector's sight (gc.freeze), as in ai_service: full collections
    then scan only what requests create, which keeps their pauses out of the latency tail."""
    import gc

    app = create_app(GatewaySettings())
    gc.collect()
    gc.freeze()
    return app
