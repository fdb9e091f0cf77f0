"""gateway app factory."""

from __future__ import annotations

from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request

from common.app import create_service_app
from common.errors import OpenAIError
from common.http import make_client
from gateway.keys import APIKey, APIKeyStore
from gateway.proxy import forward
from gateway.ratelimit import RateLimiter
from gateway.settings import GatewaySettings

router = APIRouter()


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def _read_body_within_limit(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies that declare no length
        size += len(chunk)
        if size > limit:
            raise OpenAIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def authenticate(request: Request) -> APIKey:
    plain = _presented_key(request)
    if not plain:
        raise OpenAIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    key = await request.app.state.keys.lookup(plain)
    if key is None:
        raise OpenAIError(401, "Invalid API key.", code="invalid_api_key")
    return key


@router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def proxy_v1(request: Request, path: str):
    state = request.app.state
    key = await authenticate(request)
    decision = await state.limiter.hit(key.id, key.rpm)
    if not decision.allowed:
        raise OpenAIError(429, f"Rate limit of {key.rpm} requests per minute reached for this key.",
                          code="rate_limit_exceeded",
                          headers={**decision.headers(), "retry-after": str(decision.reset_sec)})
    body = await _read_body_within_limit(request, state.settings.max_body_bytes)
    return await forward(request, body, key, state.client, state.settings.ai_gateway_shared_token, decision.headers())


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await app.state.client.aclose()
        await app.state.redis.aclose()

    app = create_service_app("gateway", settings, lifespan=lifespan)
    app.state.redis = aioredis.from_url(settings.redis_url)
    app.state.keys = APIKeyStore(app.state.redis)
    app.state.limiter = RateLimiter(app.state.redis)
    app.state.client = make_client(settings.ai_service_url, settings.upstream_timeout_sec, max_connections=1024)

    async def redis_ready() -> None:
        await app.state.redis.ping()

    async def ai_service_ready() -> None:
        response = await app.state.client.get("/readyz", timeout=3.0)
        if response.status_code != 200:
            raise RuntimeError(f"ai_service /readyz answered {response.status_code}")

    app.state.readiness.required.update({"redis": redis_ready, "ai_service": ai_service_ready})
    app.include_router(router)
    return app
