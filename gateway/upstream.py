"""The gateway's pooled keep-alive HTTP/1.1 client to ai_service.

aiohttp rather than httpx on this path: its C parser and thinner connection pool cost about half the
CPU per proxied request (see bench/results/gateway_overhead_profile.md). Bodies are passed as bytes,
never decoded or decompressed; the path is sent exactly as checked (`encoded=True`).
"""

from __future__ import annotations

import aiohttp
from yarl import URL


# Idle pooled connections are dropped before uvicorn's own keep-alive timeout (5 s) closes them
# on ai_service's side, so a request never goes out on a connection the server is closing.
KEEPALIVE_SEC = 4.0


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
                # no progress for read_timeout seconds fails the request; a slow but progressing stream does not
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=self.read_timeout))
        return self._session

    async def request(self, method: str, path_and_query: str, body: bytes,
                      headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self.session().request(
            method, URL(self.base_url + path_and_query, encoded=True), data=body or None, headers=headers,
            allow_redirects=False)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
