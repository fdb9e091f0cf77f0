"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed bodies)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.logging import request_id_var
from common.metrics import ServiceMetrics

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger("access")


def _route_template(app, scope: Scope) -> str:
    # Label metrics by route template (/v1/adapters/{name}), never by raw path: bounded cardinality.
    matched = scope.get("route")  # set by the router when it matched: no second pass over every route
    if matched is not None and getattr(matched, "path", None):
        return matched.path
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", scope["path"])
    return "unmatched"


class RequestContextMiddleware:
    """Gives every request an id (kept from x-request-id when sane), logs one line per request
    and records count and latency by route and status."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, router_app=None):
        self.app = app
        self.metrics = metrics
        self.router_app = router_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"]
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(self.router_app, scope)
            status = str(status_holder["status"])
            labels = (self.metrics.service, scope["method"], route, status)
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(elapsed)
            if route not in ("/healthz", "/metrics", "/readyz"):
                access_log.info(
                    "request",
                    extra={"method": scope["method"], "path": scope["path"], "status": int(status),
                           "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)
