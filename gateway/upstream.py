"""The gateway's pooled keep-alive HTTP/1.1 client to ai_service.

aiohttp rather than httpx on this path: its C parser and thinner connection pool cost about half the
CPU per proxied request (see bench/results/gateway_overhead_profile.md). Bodies are passed as bytes,
never decoded or decompressed; the path is sent exactly as checked (`encoded=True`).
"""

from __future__ import annotations

import aiohttp
from yarl import URL


# Idle pooled connections are dropped before uvicorn's own keep-alive timeout (5 s) closes them
# on ai_service's side, so a request rarely goes out on a connection the server is closing (see
# Upstream.request for when it still does).
KEEPALIVE_SEC = 4.0
# Kept-alive connections found hung up, one after another, before a request is given up (each
# is dropped from the pool as it fails; more than one only when the server closed several at once).
MAX_REUSED_HANGUPS = 2


async def _mark_reused(session, trace_context, params) -> None:
    # aiohttp's trace hook for a request that the pool gave a kept-alive connection
    if isinstance(trace_context.trace_request_ctx, dict):
        trace_context.trace_request_ctx["reused"] = True


def _reuse_tracing() -> aiohttp.TraceConfig:
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_reuseconn.append(_mark_reused)
    return tracing


class Upstream:
    def __init__(self, base_url: str, read_timeout: float, max_connections: int):
        self.base_url = base_url.rstrip("/")
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the worker's running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections,
                                             keepalive_timeout=KEEPALIVE_SEC, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("Accept-Encoding",),
                trace_configs=[_reuse_tracing()],
                # no progress for read_timeout seconds fails the request; a slow but progressing stream does not
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=self.read_timeout))
        return self._session

    async def request(self, method: str, path_and_query: str, body: bytes,
                      headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Returns once the response's headers are in. A request that went out on a kept-alive
        connection which the server hung up on before answering is sent again (at most
        MAX_REUSED_HANGUPS times, each on the pool's next connection): uvicorn's idle timer runs from
        its last byte, ours from when a busy event loop read it, so the two can cross. aiohttp retries
        only idempotent methods by itself; nothing came back here, so a POST is safe to resend, as
        browsers and urllib3 do. A hang-up on a fresh connection is the server's answer: no retry."""
        url = URL(self.base_url + path_and_query, encoded=True)
        hangups = 0
        while True:
            connection = {"reused": False}
            try:
                return await self.session().request(method, url, data=body or None, headers=headers,
                                                    allow_redirects=False, trace_request_ctx=connection)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                hangups += 1
                if not connection["reused"] or hangups > MAX_REUSED_HANGUPS:
                    raise

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
