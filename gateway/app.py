"""gateway app factory."""

from __future__ import annotations

import json
import logging
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
from gateway.routes import PUBLIC_ROUTES, PublicRoute
from gateway.settings import GatewaySettings
from gateway.upstream import Upstream

log = logging.getLogger("gateway.app")

_DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


# Statuses the gateway itself (or any service behind it) may answer on every public route, with what they mean
# there (gateway/proxy.py; a service documents its own reasons in its schema).
ERROR_STATUSES = {
    400: "Invalid request",
    401: "Missing, unknown or revoked API key (missing_api_key, invalid_api_key)",
    404: "Unknown route (unknown_route) or resource",
    413: "Body over the gateway's GATEWAY_MAX_BODY_BYTES (request_too_large) or a service's own limit",
    422: "A field failed validation",
    429: "The key's requests-per-minute limit reached (x-ratelimit-* headers)",
    502: "ai_service's answer was cut off (ai_service_error)",
    503: "The API key store, ai_service or a service behind it is unavailable",
    504: "ai_service did not answer in time (ai_service_timeout)",
}


def error_schema() -> dict:
    """The OpenAI-shaped error body (common.errors), as an OpenAPI component."""
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string", "enum": sorted(set(ERROR_TYPE_BY_STATUS.values()))},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}


def error_response(description: str = "OpenAI-shaped error") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def skeleton_operation(route: PublicRoute, method: str) -> dict:
    """What the gateway alone knows of a route: its path, summary and errors, no body schemas."""
    operation = {
        "summary": route.summary,
        "security": [{"apiKey": []}],
        "parameters": [{"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                       for part in route.path.split("/") if part.startswith("{")],
        "responses": {"200": {"description": "The service's answer"},
                      **{str(s): error_response(text) for s, text in ERROR_STATUSES.items()}},
    }
    if method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object"}}}}
    return operation


def skeleton_openapi() -> dict:
    """An OpenAPI document of the public routes from the allow-list alone (bodies as plain objects): the
    base scripts/build_public_openapi.py fills in, and what is served when its output is absent."""
    paths: dict = {}
    for route in PUBLIC_ROUTES:
        for method in route.methods:
            paths.setdefault(route.path, {})[method.lower()] = skeleton_operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tutorstack API", "version": "1",
                 "description": "OpenAI-compatible tutoring API. Send `Authorization: Bearer <API key>`."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": error_schema()},
        },
    }


def public_openapi(settings: GatewaySettings) -> dict:
    """The OpenAPI document of the public routes (the gateway forwards these and nothing else).

    Request and response bodies are those of ai_service and the services behind it, which the gateway
    cannot import: scripts/build_public_openapi.py assembles them into the committed docs/openapi.json
    (GATEWAY_OPENAPI_PATH), served here. Its paths are kept to the allow-list (a route the file lacks gets
    its skeleton entry); without a readable file the skeleton is served. Logs which one it is."""
    skeleton = skeleton_openapi()
    path = settings.openapi_path
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            raise ValueError("not an OpenAPI document (no paths object)")
    except FileNotFoundError:
        log.warning("public OpenAPI: %s not found, serving the skeleton of the public routes (no body schemas)",
                    path, extra={"openapi_source": "skeleton"})
        return skeleton
    except (OSError, ValueError) as exc:
        log.error("public OpenAPI: %s unreadable (%s), serving the skeleton of the public routes", path, exc,
                  extra={"openapi_source": "skeleton"})
        return skeleton
    paths: dict = {}
    missing = []
    for route in PUBLIC_ROUTES:
        for method in route.methods:
            operation = (document["paths"].get(route.path) or {}).get(method.lower())
            if not isinstance(operation, dict):
                operation = skeleton["paths"][route.path][method.lower()]
                missing.append(f"{method} {route.path}")
            paths.setdefault(route.path, {})[method.lower()] = operation
    document["paths"] = paths
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(skeleton["components"]["securitySchemes"])
    components.setdefault("schemas", {}).setdefault("Error", error_schema())
    if missing:
        log.warning("public OpenAPI: %s lacks %d public route(s), skeleton entries served for them (run "
                    "`make openapi`): %s", path, len(missing), ", ".join(missing),
                    extra={"openapi_source": str(path)})
    else:
        log.info("public OpenAPI: serving %s", path, extra={"openapi_source": str(path)})
    return document


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
        schema = public_openapi(settings)
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
