"""httpx helpers: one pooled client per upstream, the request id passed along."""

from __future__ import annotations

import httpx

from common.logging import request_id_var


def request_id_headers() -> dict[str, str]:
    request_id = request_id_var.get()
    return {"x-request-id": request_id} if request_id != "-" else {}


def make_client(base_url: str = "", timeout: float = 30.0, max_connections: int = 256) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
