"""The public routes as plain ASGI endpoints: check the path, the key and the rate limit, then pass
the request to ai_service and stream the answer back unbuffered.

Plain ASGI (no FastAPI dependency injection, no Request/Response objects, no JSON parsing of the
bodies it only passes on) because this runs on every request; errors raised before the response
starts go through the app's OpenAI-shaped error handlers.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from common.auth import GATEWAY_TOKEN_HEADER, Caller
from common.errors import OpenAIError
from common.logging import request_id_var
from gateway import routes
from gateway.routes import PublicRoute

log = logging.getLogger("gateway.proxy")

# Client headers passed on to ai_service; everything else (cookies, hop-by-hop, any
# x-tutorstack-* a client might forge) is dropped.
FORWARDED_REQUEST_HEADERS = (b"content-type", b"accept", b"x-data-classification", b"user-agent")
# ai_service response headers passed back to the client.
RETURNED_RESPONSE_HEADERS = ("content-type", "cache-control", "x-tutorstack-upstream", "x-tutorstack-model",
                             "x-tutorstack-data-classification", "x-tutorstack-mode", "x-tutorstack-retrieval",
                             "retry-after")
# Answers up to this size that declare their length are sent in one piece (no chunked framing).
WHOLE_BODY_MAX = 1 << 20


def not_found(raw_path: str) -> OpenAIError:
    return OpenAIError(404, f"Unknown API route: {raw_path[:200]}", code="unknown_route")


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip().decode("latin-1") or None
    key = headers.get(b"x-api-key")
    return key.decode("latin-1") if key else None


async def read_body_within_limit(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")
    chunks, size = [], 0
    while True:  # also bounds chunked bodies that declare no length
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(400, "The client went away.", code="client_disconnected")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise OpenAIError(413, f"Request body is larger than the limit of {limit} bytes.",
                                  code="request_too_large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ProxyEndpoint:
    """The ASGI endpoint of one public route."""

    def __init__(self, route: PublicRoute):
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        # The router matched the decoded path; the path as sent must name the same route too
        # (this refuses /v1/learners/%2e%2e and friends).
        if routes.match(raw_path) is not self.route:
            raise not_found(raw_path)
        headers = dict(scope["headers"])
        plain = presented_key(headers)
        if not plain:
            raise OpenAIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        try:
            admission = await state.gatekeeper.admit(plain)
        except RedisError as exc:
            log.error("the key store (Redis) failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            raise OpenAIError(503, "The API key store is unavailable; try again shortly.",
                              code="key_store_unavailable") from exc
        if admission is None:
            raise OpenAIError(401, "Invalid API key.", code="invalid_api_key")
        key, decision = admission.key, admission.decision
        if not decision.allowed:
            raise OpenAIError(429, f"Rate limit of {key.rpm} requests per minute reached for this key.",
                              code="rate_limit_exceeded",
                              headers={**decision.headers(), "retry-after": str(decision.reset_sec)})
        settings = state.settings
        body = await read_body_within_limit(receive, headers, settings.max_body_bytes)

        upstream_headers = {name.decode(): headers[name].decode("latin-1")
                            for name in FORWARDED_REQUEST_HEADERS if name in headers}
        if body:
            # The API speaks JSON only. `curl -d` labels its body form-urlencoded; read it as the JSON it is
            # (a body that is not JSON still gets a clear 400 from ai_service).
            upstream_headers["content-type"] = "application/json"
        request_id = request_id_var.get()
        if request_id != "-":
            upstream_headers["x-request-id"] = request_id
        upstream_headers.update(Caller(key.id, key.classification, key.user_id, key.role).headers())
        if settings.ai_gateway_shared_token:
            upstream_headers[GATEWAY_TOKEN_HEADER] = settings.ai_gateway_shared_token
        query = scope.get("query_string", b"")
        url = raw_path + ("?" + query.decode("latin-1") if query else "")
        try:
            upstream = await state.upstream.request(scope["method"], url, body, upstream_headers)
        except asyncio.TimeoutError as exc:
            raise OpenAIError(504, "ai_service did not answer in time.", code="ai_service_timeout") from exc
        except aiohttp.ClientError as exc:
            raise OpenAIError(503, f"ai_service is unreachable: {type(exc).__name__}.",
                              code="ai_service_unavailable") from exc
        try:
            upstream_response_headers = upstream.headers
            response_headers = [(name.encode(), upstream_response_headers[name].encode("latin-1"))
                                for name in RETURNED_RESPONSE_HEADERS if name in upstream_response_headers]
            response_headers.extend((k.encode(), v.encode()) for k, v in decision.headers().items())
            length = upstream.content_length
            if length is not None and length <= WHOLE_BODY_MAX:
                try:
                    content = await upstream.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    raise OpenAIError(502, "ai_service's answer was cut off.", code="ai_service_error") from exc
                response_headers.append((b"content-length", str(len(content)).encode()))
                await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
                await send({"type": "http.response.body", "body": content})
                return
            await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
            try:
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass  # ai_service cut the stream; end ours (its own in-band error, if any, was passed on)
            await send({"type": "http.response.body", "body": b""})
        finally:
            upstream.release()
