"""ai_service's pooled keep-alive HTTP/1.1 client to its upstreams (the model servers, and the internal
services it delegates to).

aiohttp rather than httpx on this path, as in the gateway (gateway/upstream.py): its C parser and thin
connection pool cost a fraction of httpx + httpcore + anyio + h11 per request
(bench/results/gateway_overhead_profile.md). One session per pool, created inside the running event
loop on first use and kept for the process: connections are reused across requests, never a client per
request. Timeouts other than connecting are the caller's (ai_service.upstreams.ProgressClock), so a slow
but progressing stream is never cut by a read timeout here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from starlette.responses import StreamingResponse
from yarl import URL

# Idle pooled connections are dropped before uvicorn's keep-alive timeout (5 s) closes them on the other
# side, so a request never goes out on a connection the server is closing.
KEEPALIVE_SEC = 4.0


class HTTPStatusError(Exception):
    """A GET that answered with a status >= 400 (readiness checks, model lists)."""

    def __init__(self, status: int, url: str):
        super().__init__(f"HTTP {status} from {url}")
        self.status = status


class HTTPPool:
    """A keep-alive connection pool to one base URL."""

    def __init__(self, base_url: str, connect_timeout: float = 5.0, max_connections: int = 256,
                 headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, URL] = {}

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        # A new loop (tests run one per asyncio.run) gets its own session: a session is bound to its loop.
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections,
                                             keepalive_timeout=KEEPALIVE_SEC, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self.headers or None,
                # no cookies kept between requests of different users, no compression asked for
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=None))
            self._loop = loop
        return self._session

    def url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:  # parsed once per path (the chat path every time): a bounded set
            url = URL(self.base_url + path)
            if len(self._urls) < 64:
                self._urls[path] = url
        return url

    async def request(self, method: str, path: str, *, data: bytes | None = None,
                      headers: dict[str, str] | None = None, params=None) -> aiohttp.ClientResponse:
        """Sends and returns once the response's headers are in; the body is the caller's to read, then
        `release()` (back to the pool when it was read to the end, closed otherwise)."""
        return await self.session().request(method, self.url(path), data=data, headers=headers, params=params,
                                            allow_redirects=False)

    async def post_json(self, path: str, body: dict, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        return await self.request("POST", path, data=dumps(body),
                                  headers={"content-type": "application/json", **(headers or {})})

    async def get_json(self, path: str, headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        """GET a JSON body; HTTPStatusError on a status >= 400."""
        async def go():
            response = await self.request("GET", path, headers=headers)
            try:
                raw = await response.read()
                if response.status >= 400:
                    raise HTTPStatusError(response.status, str(self.url(path)))
                return loads(raw)
            finally:
                response.release()

        if timeout is None:
            return await go()
        async with asyncio.timeout(timeout):
            return await go()

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # its loop is gone (tests); nothing is left open on a closed loop
                pass
        self._session = None


try:  # orjson when installed: a few times faster on the completion bodies
    import orjson

    def dumps(value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits, which json still writes
            return json.dumps(value, separators=(",", ":")).encode()

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    loads = json.loads


class RelayResponse(StreamingResponse):
    """A StreamingResponse for relayed streams that watches for the client going away with one plain asyncio
    task instead of an anyio task group per response (uvicorn speaks ASGI 2.3, so Starlette would open one for
    every stream: a large share of a streamed request's CPU here). When the client disconnects mid-stream the
    streaming is cancelled, which closes the body iterator and with it the upstream connection, so the model
    server stops generating for nobody."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        task = asyncio.current_task()
        state = {"streaming": True, "disconnected": False}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if state["streaming"]:
                        state["disconnected"] = True
                        task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # Ours (the client went away) is absorbed; any other cancellation (shutdown) goes on.
            if not state["disconnected"] or task.uncancel() > 0:
                raise
        finally:
            state["streaming"] = False
            watcher.cancel()
        if self.background is not None:
            await self.background()
