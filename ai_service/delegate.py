"""Delegation to the platform's internal services (writing, guided, practice, health).

ai_service is the one entry the gateway forwards to; routes owned by another service are
passed on here with that service's own token and the caller's identity, and the answer
(JSON or an SSE stream) comes back unbuffered. Add a service by giving it a URL and token
setting (`<name>_service_url`, `<name>_api_token`) and routes that call `delegate`.
"""

from __future__ import annotations

import httpx
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from common.auth import Caller, service_headers
from common.errors import OpenAIError
from common.http import make_client

PASSED_REQUEST_HEADERS = ("content-type", "accept", "x-data-classification")
RETURNED_RESPONSE_HEADERS = ("content-type", "cache-control", "retry-after")


class ServiceDirectory:
    """One pooled client per internal service, built lazily from ai_service's settings."""

    def __init__(self, settings):
        self.settings = settings
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, service: str) -> httpx.AsyncClient:
        if service not in self._clients:
            url = getattr(self.settings, f"{service}_service_url")
            self._clients[service] = make_client(url, self.settings.delegate_timeout_sec)
        return self._clients[service]

    def token(self, service: str) -> str:
        return getattr(self.settings, f"{service}_api_token")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


async def delegate(request: Request, caller: Caller, service: str, path: str | None = None) -> StreamingResponse:
    """Forward this request as it is (method, path, query, body) to `service`."""
    directory: ServiceDirectory = request.app.state.services
    client = directory.client(service)
    headers = {name: request.headers[name] for name in PASSED_REQUEST_HEADERS if name in request.headers}
    headers.update(service_headers(directory.token(service), caller))
    body = await request.body()
    # safety (ai_service/moderation.py): a guided / role-play turn is checked before it is forwarded
    from ai_service.moderation import moderate_delegated, moderate_delegated_reply

    moderation, body, answered = await moderate_delegated(request, caller, service, body)
    if answered is not None:
        return answered
    upstream_request = client.build_request(request.method, path or request.url.path,
                                            params=request.query_params, content=body, headers=headers)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException as exc:
        raise OpenAIError(504, f"The {service} service did not answer in time.", code=f"{service}_timeout") from exc
    except httpx.HTTPError as exc:
        raise OpenAIError(503, f"The {service} service is unreachable: {type(exc).__name__}.",
                          code=f"{service}_unavailable") from exc
    returned = {name: upstream.headers[name] for name in RETURNED_RESPONSE_HEADERS if name in upstream.headers}
    returned.update({k: v for k, v in upstream.headers.items() if k.startswith("x-tutorstack-")})
    if moderation is not None and upstream.status_code < 400:  # safety: ... and its reply when it comes back
        return await moderate_delegated_reply(request, moderation, upstream, returned)
    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=returned,
                             background=BackgroundTask(upstream.aclose))
