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
import httptools
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
        self._lean: LeanPool | bool | None = None

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

    async def post_json(self, path: str, body: dict, headers: dict[str, str] | None = None):
        """POST a JSON body (the chat completions, every request): on the lean client below when the base URL is
        plain http, else through aiohttp. Returns once the response's headers are in (`ClientResponse`-like)."""
        if self._lean is None:
            self._lean = LeanPool.for_url(self.base_url, self.connect_timeout, self.max_connections) or False
        if self._lean:
            return await self._lean.post(self._lean.prefix + path, dumps(body), headers or {})
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
        if self._lean:
            self._lean.close()
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # its loop is gone (tests); nothing is left open on a closed loop
                pass
        self._session = None


class LeanPool:
    """Keep-alive HTTP/1.1 connections to one plain-http server for the hottest call, POST /chat/completions:
    the request goes out in one write, the response is parsed by httptools (uvicorn's C parser). aiohttp's
    client costs several times as much per request (its request object, header multidicts, payload registry
    and, on Python < 3.12, a task to write each body): about a fifth of ai_service's CPU per proxied chat
    (bench/results/gateway_overhead*). Responses look like aiohttp's to their readers (status, headers, read(),
    content.iter_any(), content.at_eof(), release()) and fail with aiohttp's exception classes, so the routing
    code judges both alike. Connections idle longer than KEEPALIVE_SEC are not reused. No connection limit of its
    own: the gateway's pool (GATEWAY_UPSTREAM_MAX_CONNECTIONS) already bounds the requests in flight."""

    def __init__(self, host: str, port: int, prefix: str, connect_timeout: float, max_connections: int):
        self.host, self.port, self.prefix = host, port, prefix
        self.connect_timeout = connect_timeout
        self._idle: list[_LeanConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host_header = f"{host}:{port}".encode("latin-1")

    @classmethod
    def for_url(cls, base_url: str, connect_timeout: float, max_connections: int) -> "LeanPool | None":
        url = URL(base_url)
        if url.scheme != "http" or not url.host or url.user or url.query_string or url.fragment:
            return None
        return cls(url.host, url.port or 80, url.raw_path.rstrip("/"), connect_timeout, max_connections)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> "_LeanResponse":
        lines = [b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                 % (path.encode("latin-1"), self._host_header, len(body))]
        for name, value in headers.items():
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        lines.append(b"\r\n")
        lines.append(body)
        request = b"".join(lines)
        reused = self._take_idle()
        try:
            return await self._send(reused or await self._connect(), request)
        except (aiohttp.ServerDisconnectedError, ConnectionResetError):
            if reused is None:
                raise
            # A kept-alive connection that the server closed as we reused it (its idle timer runs from
            # when it sent the last byte, ours from when a busy event loop read it): nothing came back,
            # so the request goes once more on a new connection, as browsers and urllib3 do.
            return await self._send(await self._connect(), request)

    async def _send(self, connection: "_LeanConnection", request: bytes) -> "_LeanResponse":
        try:
            response = connection.start(self)
            connection.transport.write(request)
            await response._headers_in
            return response
        except BaseException:
            connection.abort()
            raise

    def _take_idle(self) -> "_LeanConnection | None":
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): connections of the old one are no use
            self._loop, self._idle = loop, []
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_SEC:
                return connection
            connection.abort()
        return None

    async def _connect(self) -> "_LeanConnection":
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_LeanConnection, self.host, self.port)
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"connecting to {self.host}:{self.port} timed out") from exc
        return connection

    def _finished(self, connection: "_LeanConnection", reuse: bool) -> None:
        if reuse and connection.reusable:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()


class _LeanConnection(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: _LeanResponse | None = None
        self.reusable = True
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self, pool: LeanPool) -> "_LeanResponse":
        self.response = _LeanResponse(pool, self)
        return self.response

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        response.status = self.parser.get_status_code()
        if not self.parser.should_keep_alive():
            self.reusable = False
        if not response._headers_in.done():
            response._headers_in.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None
        if response is not None:
            response._end()

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.connection_lost(aiohttp.ClientPayloadError(f"unreadable response: {exc}"))
            self.abort()

    def connection_lost(self, exc) -> None:
        self.reusable = False
        response, self.response = self.response, None
        if response is not None:
            if not response._headers_in.done():
                response._headers_in.set_exception(aiohttp.ServerDisconnectedError())
            elif exc is None and "content-length" not in response.headers and \
                    "chunked" not in response.headers.get("transfer-encoding", ""):
                response._end()  # a body delimited by the end of the connection (HTTP/1.0 style)
            else:
                response._fail(exc if isinstance(exc, aiohttp.ClientError) else aiohttp.ClientPayloadError(
                    f"the response was cut off: {exc or 'connection closed'}"))


class _LeanResponse:
    """What ai_service.upstreams reads of an aiohttp.ClientResponse."""

    def __init__(self, pool: LeanPool, connection: _LeanConnection):
        self._pool, self._connection = pool, connection
        self.status = 0
        self.headers: dict[str, str] = {}
        self._headers_in = asyncio.get_running_loop().create_future()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._released = False
        self.content = self

    # fed by the connection
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > 1 << 18:  # a reader that falls behind: stop reading until it catches up
            self._connection.transport.pause_reading()
        self._wake()

    def _end(self) -> None:
        self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next(self) -> bytes | None:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if self._buffered > 1 << 18 and self._connection.transport is not None:
            self._connection.transport.resume_reading()
        self._buffered = 0
        return data

    # the reader's side
    def iter_any(self):
        return self

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        data = await self._next()
        if data is None:
            raise StopAsyncIteration
        return data

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read(self) -> bytes:
        parts = []
        while (data := await self._next()) is not None:
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool when the body was read to its end; the connection is closed otherwise."""
        if not self._released:
            self._released = True
            self._pool._finished(self._connection, reuse=self.at_eof() and self._error is None)


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
