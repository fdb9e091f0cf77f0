"""Forwards an authenticated request to ai_service and streams the answer back unbuffered."""

from __future__ import annotations

import httpx
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from common.auth import Caller
from common.errors import OpenAIError
from common.http import request_id_headers
from gateway.keys import APIKey

# Client headers passed on to ai_service; everything else (cookies, hop-by-hop, any
# x-tutorstack-* a client might forge) is dropped.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "x-data-classification", "user-agent")
# ai_service response headers passed back to the client.
RETURNED_RESPONSE_HEADERS = ("content-type", "cache-control", "x-tutorstack-upstream", "x-tutorstack-model",
                             "x-tutorstack-data-classification", "x-tutorstack-mode", "x-tutorstack-retrieval",
                             "retry-after")


async def forward(request: Request, body: bytes, key: APIKey, client: httpx.AsyncClient, shared_token: str,
                  extra_headers: dict[str, str]) -> StreamingResponse:
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    headers.update(request_id_headers())
    if body:
        # The API speaks JSON only. `curl -d` labels its body form-urlencoded; read it as the JSON it is
        # (a body that is not JSON still gets a clear 400 from ai_service).
        headers["content-type"] = "application/json"
    headers.update(Caller(key.id, key.classification, key.user_id, key.role).headers())
    if shared_token:
        headers["x-tutorstack-gateway-token"] = shared_token
    upstream_request = client.build_request(
        request.method, request.url.path, params=request.query_params, content=body, headers=headers)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException as exc:
        raise OpenAIError(504, "ai_service did not answer in time.", code="ai_service_timeout") from exc
    except httpx.HTTPError as exc:
        raise OpenAIError(503, f"ai_service is unreachable: {type(exc).__name__}.", code="ai_service_unavailable") from exc
    response_headers = {name: upstream.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in upstream.headers}
    response_headers.update(extra_headers)
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=response_headers,
        background=BackgroundTask(upstream.aclose),
    )
