"""The gateway's connection to Redis for the per-request key check: one connection per worker, auto-pipelined.

Every request sends one command (the key check's Lua script, gateway/ratelimit.py). Sent one by one, each is a
socket write that wakes Redis, and redis-py adds a connection checkout and its own bookkeeping per command. Here
the commands that requests issue in the same turn of the event loop go out in one write, and their replies,
which Redis sends in order, are handed back in order: still one round trip per request, fewer system calls and
wake-ups on both sides (bench/results/gateway_overhead*).

RESP2 over plain TCP (`redis://`, with AUTH and SELECT from the URL), encoded and parsed by hiredis. Other URLs (rediss://, unix://) keep
redis-py (`supports()`). Errors are redis-py's exception classes, so callers handle both alike: a reply error
is a ResponseError, a lost or refused connection a ConnectionError (every command waiting on it fails; the
next command connects again). A waiter cancelled meanwhile (the gatekeeper's watchdog) leaves its reply to be
read and dropped in turn, so replies never go to the wrong request.
"""

from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError


def supports(url: str) -> bool:
    return urlsplit(url).scheme == "redis"


pack = hiredis.pack_command  # RESP encoding of one command, in hiredis's C code


def _reply_error(error: ResponseError) -> ResponseError:
    """redis-py's class for an error reply, as redis-py itself would raise it."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return error


class _RespProtocol(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        # hiredis parses the replies (an unreadable stream raises ConnectionError; error replies come back
        # as ResponseError values)
        self.reader = hiredis.Reader(protocolError=ConnectionError, replyError=ResponseError)
        self.lost: Exception | None = None
        self.outgoing: list[bytes] = []  # commands of this turn of the event loop, written together

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (value := self.reader.gets()) is not False:  # False: the next reply has not all arrived
                waiter = self.waiters.popleft() if self.waiters else None
                if waiter is not None and not waiter.done():
                    if isinstance(value, ResponseError):
                        waiter.set_exception(_reply_error(value))
                    else:
                        waiter.set_result(value)
        except Exception as exc:  # unreadable: nothing after it can be matched to its request any more
            self.transport.close()
            self.connection_lost(exc if isinstance(exc, ConnectionError) else ConnectionError(str(exc)))

    def connection_lost(self, exc) -> None:
        if self.lost is None:
            self.lost = exc if isinstance(exc, ConnectionError) else ConnectionError(
                f"Connection to Redis lost: {exc or 'closed'}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)


class PipelinedRedis:
    def __init__(self, url: str, connect_timeout: float = 5.0):
        options = parse_url(url)
        self.host, self.port = options.get("host", "localhost"), options.get("port", 6379)
        self.db, self.username, self.password = options.get("db", 0), options.get("username"), options.get("password")
        self.connect_timeout = connect_timeout
        self._protocol: _RespProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future | None = None
        self.commands_sent = 0  # commands written (tests count round trips with it)
        self.writes = 0  # socket writes they took

    async def execute(self, *args):
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connected()
        return await self._send(protocol, pack(args))

    async def evalsha(self, sha: str, script: str, keys: list, args: list):
        """EVALSHA, and EVAL when Redis does not hold the script (after a restart or SCRIPT FLUSH)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    def _send(self, protocol: _RespProtocol, command: bytes) -> asyncio.Future:
        waiter = self._loop.create_future()
        protocol.waiters.append(waiter)
        if not protocol.outgoing:
            self._loop.call_soon(self._flush, protocol)
        protocol.outgoing.append(command)
        self.commands_sent += 1
        return waiter

    def _flush(self, protocol: _RespProtocol) -> None:
        outgoing, protocol.outgoing = protocol.outgoing, []
        if outgoing and protocol.lost is None and not protocol.transport.is_closing():
            protocol.transport.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])
            self.writes += 1

    async def _connected(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old connection belongs to the old one
            self._loop, self._protocol, self._connecting = loop, None, None
        if self._connecting is None or self._connecting.done():
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            self._connecting = loop.create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _RespProtocol:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await self._loop.create_connection(_RespProtocol, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"Error connecting to Redis at {self.host}:{self.port}: {exc!r}") from exc
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.password:
                    auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    await self._send(protocol, pack(auth))
                if self.db:
                    await self._send(protocol, pack(("SELECT", self.db)))
        except BaseException:
            protocol.transport.close()
            raise
        self._protocol = protocol
        return protocol

    def reset(self, reason: str = "Redis stopped answering") -> None:
        """Drops the connection (after a timeout): what waits on it fails now, the next command reconnects."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            if protocol.transport is not None:
                protocol.transport.close()
            protocol.connection_lost(ConnectionError(reason))

    async def aclose(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
