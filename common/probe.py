"""HTTP readiness probing, shared by the platform's pollers (services/health's poller of every service's
/readyz, ai_service's replica pool of each vLLM's /health): one GET of a URL within a timeout, answered as
status + latency + error text. Never raises for a failed probe: a probe's failure is its result.

Pure httpx, no FastAPI; the caller owns the client (pooled keep-alive connections between rounds).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class ProbeResult:
    url: str
    at: float  # epoch seconds when the probe started
    latency_ms: float  # to the answer's end, or to the failure
    status: int | None = None  # the HTTP status; None when nothing answered
    error: str | None = None  # None when it answered 200; else "HTTP 503", "timeout after 2s", ...
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def answered(self) -> bool:
        return self.status is not None

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def describe_error(error: BaseException | httpx.Response | None) -> str:
    """A short text for what went wrong with one HTTP call (no URLs, no secrets)."""
    if isinstance(error, httpx.Response):
        return f"HTTP {error.status_code}"
    if isinstance(error, httpx.ConnectError):
        return "connection refused or host unreachable"
    return type(error).__name__[:100]


async def probe(client: httpx.AsyncClient, url: str, timeout: float, *, connect_timeout: float | None = None,
                headers: dict[str, str] | None = None) -> ProbeResult:
    """GET `url` within `timeout` seconds (connecting within `connect_timeout`, default min(timeout, 2))."""
    at = time.time()
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    connect = min(timeout, 2.0) if connect_timeout is None else connect_timeout
    try:
        response = await client.get(url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect))
    except httpx.TimeoutException:
        return ProbeResult(url, at, elapsed(), error=f"timeout after {timeout:g}s")
    except httpx.HTTPError as exc:
        return ProbeResult(url, at, elapsed(), error=describe_error(exc))
    return ProbeResult(url, at, elapsed(), response.status_code,
                       None if response.status_code == 200 else describe_error(response), response.content)


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancels a poller's background task and waits for it to end (whatever it raised on the way)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
