"""The poller: checks every target's readiness URL concurrently, tracks each service's status and
the time it last changed, records every check in the store and in Prometheus metrics.

No FastAPI here: the app runs `Poller.run_forever()` in its lifespan; `probe()` is the same check
for one URL (compose healthchecks and `python -m services.health probe`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field

import httpx

from common.logging import get_logger
from common.probe import probe as probe_url
from common.probe import stop_task
from services.health.targets import Target

log = get_logger("health.poller")

UP, DEGRADED, DOWN, UNKNOWN = "up", "degraded", "down", "unknown"
SERVING = (UP, DEGRADED)  # answers its readiness check (degraded: an optional dependency failed)


@dataclass
class Check:
    """One check of one service."""

    service: str
    status: str
    at: float  # epoch seconds
    latency_ms: float | None
    http_status: int | None = None
    error: str | None = None
    failing: list[str] = field(default_factory=list)  # names of its own readiness checks that failed

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ServiceState:
    """What is known of one service: the last check and when its status last changed."""

    target: Target
    status: str = UNKNOWN
    last_change: float | None = None
    last_check: Check | None = None

    def apply(self, check: Check) -> bool:
        """Take a new check; True when the status changed."""
        changed = check.status != self.status
        if changed:
            self.status = check.status
            self.last_change = check.at
        self.last_check = check
        return changed


def _failing_checks(body: object) -> list[str]:
    """Names of the failed checks in a tutorstack /readyz body ({"checks": {name: "ok"|"failed: ..."}})."""
    if not isinstance(body, dict) or not isinstance(body.get("checks"), dict):
        return []
    return sorted(str(name)[:64] for name, result in body["checks"].items() if result != "ok")[:20]


async def check_target(client: httpx.AsyncClient, target: Target, timeout: float) -> Check:
    result = await probe_url(client, target.url, timeout)  # common/probe.py: never raises
    if not result.answered:
        return Check(target.name, DOWN, result.at, result.latency_ms, error=result.error)
    body = result.json()
    failing = _failing_checks(body)
    if not result.ok:
        return Check(target.name, DOWN, result.at, result.latency_ms, result.status, result.error, failing)
    degraded = isinstance(body, dict) and bool(body.get("degraded"))
    return Check(target.name, DEGRADED if degraded else UP, result.at, result.latency_ms, 200, None, failing)


def overall_status(states: list[ServiceState]) -> str:
    """ok: every service serving; degraded: an optional one down or any degraded; down: a core one down."""
    if any(s.status in (DOWN, UNKNOWN) and not s.target.optional for s in states):
        return "down"
    if any(s.status != UP for s in states):
        return "degraded"
    return "ok"


class Poller:
    def __init__(self, targets: list[Target], *, store=None, interval_sec: float = 10.0, timeout_sec: float = 3.0,
                 up_gauge=None, latency_histogram=None, client: httpx.AsyncClient | None = None):
        self.targets = targets
        self.store = store
        self.interval_sec = interval_sec
        self.timeout_sec = timeout_sec
        self.states: dict[str, ServiceState] = {t.name: ServiceState(t) for t in targets}
        self.up_gauge = up_gauge
        self.latency_histogram = latency_histogram
        self.client = client or httpx.AsyncClient(follow_redirects=False)
        self.rounds = 0
        self.last_round_at: float | None = None
        self._task: asyncio.Task | None = None

    async def restore(self) -> None:
        """Status and last-change time from the store, so a restart keeps the history's meaning."""
        if self.store is None:
            return
        try:
            saved = await self.store.load_states([t.name for t in self.targets])
        except Exception as exc:  # Redis down at start-up: begin from unknown
            log.warning("could not restore health state: %s", exc)
            return
        for name, data in saved.items():
            state = self.states[name]
            state.status = data.get("status") or UNKNOWN
            state.last_change = data.get("last_change")
            if data.get("last_check"):
                state.last_check = Check(**data["last_check"])

    async def run_once(self) -> list[Check]:
        checks = await asyncio.gather(*(check_target(self.client, t, self.timeout_sec) for t in self.targets))
        for check in checks:
            state = self.states[check.service]
            previous = state.status
            if state.apply(check):
                log.info("%s: %s -> %s%s", check.service, previous, check.status,
                         f" ({check.error})" if check.error else "")
            if self.up_gauge is not None:
                self.up_gauge.labels(check.service).set(1 if check.status in SERVING else 0)
            if self.latency_histogram is not None and check.latency_ms is not None:
                self.latency_histogram.labels(check.service).observe(check.latency_ms / 1000)
        if self.store is not None:
            try:
                await self.store.record(list(self.states.values()), checks)
            except Exception as exc:  # keep polling; the history has a gap
                log.warning("could not record health checks: %s", exc)
        self.rounds += 1
        self.last_round_at = time.time()
        return checks

    async def run_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.run_once()
            except Exception:  # never let one bad round stop the poller
                log.exception("health round failed")
            await asyncio.sleep(max(0.0, self.interval_sec - (time.monotonic() - started)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="health-poller")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.client.aclose()


async def probe(url: str, timeout: float = 4.0) -> Check:
    """One check of one URL, as the poller does it (compose healthchecks use this)."""
    async with httpx.AsyncClient() as client:
        return await check_target(client, Target("probe", url), timeout)
