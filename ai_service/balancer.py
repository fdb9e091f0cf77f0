"""Which vLLM replica serves a request: LoRA-adapter affinity, then the least-loaded replica.

Pure logic, no I/O and no FastAPI (the HTTP side, polling and on-demand adapter loading, lives in
ai_service/replica_pool.py), so every decision is unit-tested.

- `parse_local_upstreams`: LLM_BASE_URL_LOCAL is one URL, a comma-separated list, or a discovery
  URL `dns+http://vllm-replicas:8000/v1` whose host name is resolved to its A/AAAA records (every
  address one replica: a Kubernetes headless Service).
- `parse_vllm_metrics`: running/waiting requests and KV-cache use from vLLM's Prometheus text.
- `Balancer.rank`: the order in which the replicas are tried for one request:
  1. replicas that are up (last health probe answered) and whose breaker lets a request through;
  2. among those, the ones that already have the requested adapter loaded, unless all of them are
     much busier than one that has not (then the adapter is loaded there too: a hot adapter spreads);
  3. then the least loaded: vLLM's own queue from the last scrape, corrected by what this ai_service
     sent or finished since that scrape, plus a penalty for waiting requests and a nearly full KV cache;
  4. optionally the same replica for the same session (user id) when it is not much busier, so that
     vLLM's prefix cache is reused across a conversation's turns;
  5. replicas that are down or whose breaker is open come last: with no other replica left they are
     still tried, so one replica behaves exactly like a single upstream.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ai_service.routing import CircuitBreaker
from common.adapters import latest_version

DISCOVERY_PREFIX = "dns+"

# Names differ across vLLM versions: 0.32 exports kv_cache_usage_perc, older ones gpu_cache_usage_perc
# (and cpu_cache_usage_perc on CPU). Gauges are summed over label sets (one per engine / model name).
RUNNING_METRICS = ("vllm:num_requests_running",)
WAITING_METRICS = ("vllm:num_requests_waiting",)
KV_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc")


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class LocalUpstreams:
    """Where the local replicas are: fixed URLs, or a DNS name to resolve again and again."""

    urls: tuple[str, ...] = ()  # static list (OpenAI base URLs, ending in /v1)
    discovery_url: str = ""  # http://host:port/v1 whose host resolves to one address per replica

    @property
    def discovered(self) -> bool:
        return bool(self.discovery_url)


def parse_local_upstreams(value: str) -> LocalUpstreams:
    items = [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
    if not items:
        raise ValueError("LLM_BASE_URL_LOCAL is empty: give a URL, a comma-separated list, or dns+http://host:port/v1")
    discovery = [item for item in items if item.startswith(DISCOVERY_PREFIX)]
    if discovery:
        if len(items) > 1:
            raise ValueError("LLM_BASE_URL_LOCAL: a dns+ discovery URL cannot be mixed with other URLs")
        url = discovery[0][len(DISCOVERY_PREFIX):]
        _check_url(url)
        return LocalUpstreams(discovery_url=url)
    for item in items:
        _check_url(item)
    if len(set(items)) != len(items):
        raise ValueError("LLM_BASE_URL_LOCAL lists the same replica twice")
    return LocalUpstreams(urls=tuple(items))


def parse_control_urls(value: str) -> tuple[str, ...]:
    """LLM_REPLICA_CONTROL_URLS: llm_server control APIs, one per replica in LLM_BASE_URL_LOCAL's order (or
    one URL whose port is used on every discovered replica's address)."""
    items = tuple(item.strip().rstrip("/") for item in value.split(",") if item.strip())
    for item in items:
        _check_url(item)
    return items


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")


def url_with_host(url: str, address: str) -> str:
    """`url` with its host replaced by one resolved address (IPv6 in brackets), port and path kept."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def control_url_for(replica_url: str, index: int, control_urls: tuple[str, ...], discovered: bool) -> str:
    """The llm_server control API of one replica ("" = none: adapters are not loaded on demand)."""
    if not control_urls:
        return ""
    if discovered:  # the llm_server sidecar on the same pod address
        return url_with_host(control_urls[0], urlsplit(replica_url).hostname or "")
    if len(control_urls) == 1 and index == 0:
        return control_urls[0]
    return control_urls[index] if index < len(control_urls) else ""


# --------------------------------------------------------------------------- vLLM's metrics

@dataclass(frozen=True)
class EngineLoad:
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # 0..1


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_vllm_metrics(text: str) -> EngineLoad:
    """Sums each gauge over its label sets; the KV-cache figure is the highest of any engine."""
    values: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            number = float(match.group(3))
        except ValueError:
            continue
        if math.isnan(number):
            continue
        values.setdefault(match.group(1), []).append(number)

    def first(names: tuple[str, ...], combine) -> float:
        for name in names:
            if name in values:
                return combine(values[name])
        return 0.0

    return EngineLoad(running=first(RUNNING_METRICS, sum), waiting=first(WAITING_METRICS, sum),
                      kv_cache_usage=first(KV_METRICS, max))


def models_of(body: dict) -> tuple[str, set[str]]:
    """(base model, adapter names) from an OpenAI /v1/models answer (vLLM marks adapters by `parent`)."""
    base, adapters = "", set()
    for model in body.get("data", []) if isinstance(body, dict) else []:
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        if model.get("parent"):
            adapters.add(model["id"])
        elif not base:
            base = model["id"]
    return base, adapters


# --------------------------------------------------------------------------- replica state

@dataclass
class Replica:
    url: str  # OpenAI base URL, ends in /v1
    control_url: str = ""  # llm_server control API ("" = no on-demand loading)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    up: bool = True  # the last health probe answered (optimistic until the first probe)
    adapters: set[str] = field(default_factory=set)
    models: list[dict] = field(default_factory=list)  # the replica's /v1/models entries
    load: EngineLoad = field(default_factory=EngineLoad)
    in_flight: int = 0  # requests this ai_service has on the replica now
    in_flight_at_scrape: int = 0  # ... when `load` was scraped (already counted in vLLM's figures)
    scraped: bool = False
    last_error: str = ""
    served: int = 0
    failed: int = 0

    @property
    def name(self) -> str:
        return urlsplit(self.url).netloc

    def estimated_requests(self) -> float:
        """vLLM's running + waiting as last scraped (every client's requests), plus what this
        ai_service started or finished since; never below what this ai_service has in flight."""
        if not self.scraped:
            return float(self.in_flight)
        scraped = self.load.running + self.load.waiting
        return max(float(self.in_flight), scraped + self.in_flight - self.in_flight_at_scrape)

    def score(self, waiting_weight: float = 1.0, kv_weight: float = 4.0) -> float:
        """Lower is better. Waiting requests count twice (the replica is already saturated), and a
        KV cache near full (preemption, recomputation) counts as up to `kv_weight` more requests."""
        if not self.scraped:
            return float(self.in_flight)
        return (self.estimated_requests() + waiting_weight * self.load.waiting
                + kv_weight * max(0.0, self.load.kv_cache_usage - 0.5) * 2)

    def available(self) -> bool:
        """Up and its breaker closed (or ready for a trial): a first choice."""
        return self.up and self.breaker.state != "open"

    def snapshot(self) -> dict:
        return {"url": self.url, "control_url": self.control_url, "up": self.up, "breaker": self.breaker.state,
                "consecutive_failures": self.breaker.consecutive_failures, "adapters": sorted(self.adapters),
                "in_flight": self.in_flight, "running": self.load.running, "waiting": self.load.waiting,
                "kv_cache_usage": round(self.load.kv_cache_usage, 4), "score": round(self.score(), 3),
                "served": self.served, "failed": self.failed, "last_error": self.last_error}


@dataclass(frozen=True)
class BalancerConfig:
    adapter_affinity: bool = True
    # Adapter holders are preferred unless the best of them scores this much worse than the best
    # replica without the adapter (then the adapter is loaded there as well).
    spill_margin: float = 4.0
    sticky_sessions: bool = True
    sticky_margin: float = 2.0  # a session's replica is kept while at most this much busier than the best


@dataclass(frozen=True)
class Choice:
    replica: Replica
    has_adapter: bool  # False for an adapter request: it must be loaded there first
    reason: str


class Balancer:
    def __init__(self, config: BalancerConfig | None = None):
        self.config = config or BalancerConfig()

    def resolve(self, model: str, base_model: str, replicas: Iterable[Replica]) -> str:
        """A family name ('peer') → its newest version loaded on any replica; anything else as is."""
        if not model or model == base_model:
            return model
        loaded = set().union(*(r.adapters for r in replicas))
        if model in loaded:
            return model
        return latest_version(loaded, model) or model

    def rank(self, replicas: list[Replica], model: str, base_model: str, session: str = "") -> list[Choice]:
        """Every replica, best first. An adapter request names whether the adapter is already there."""
        wants_adapter = bool(model) and model != base_model
        first = [r for r in replicas if r.available()]
        last = [r for r in replicas if not r.available()]
        # Down/open replicas last, the ones that failed least recently... in a fixed, stable order.
        last.sort(key=lambda r: (r.up is False, r.breaker.consecutive_failures, r.url))
        ordered = self._order(first, model if wants_adapter else "", session)
        choices = []
        for replica, reason in ordered + [(r, "unavailable, tried last") for r in last]:
            has = (model in replica.adapters) if wants_adapter else True
            choices.append(Choice(replica, has, reason))
        return choices

    def _order(self, replicas: list[Replica], adapter: str, session: str) -> list[tuple[Replica, str]]:
        if not replicas:
            return []
        by_load = sorted(replicas, key=lambda r: (r.score(), r.in_flight, r.url))
        reason = "least loaded"
        if adapter and self.config.adapter_affinity:
            holders = [r for r in by_load if adapter in r.adapters]
            others = [r for r in by_load if adapter not in r.adapters]
            if holders and (not others or holders[0].score() - others[0].score() <= self.config.spill_margin):
                by_load, reason = holders + others, "has the adapter"
            elif holders:
                reason = "adapter holders too busy: least loaded"
        if session and self.config.sticky_sessions and len(by_load) > 1:
            head = by_load[0]
            group = [r for r in by_load if not adapter or not self.config.adapter_affinity
                     or (adapter in r.adapters) == (adapter in head.adapters)]
            sticky = rendezvous(session, group)
            if sticky is not head and sticky.score() - head.score() <= self.config.sticky_margin:
                by_load.remove(sticky)
                by_load.insert(0, sticky)
                return [(sticky, "session's replica")] + [(r, reason) for r in by_load[1:]]
        return [(r, reason) for r in by_load]


def rendezvous(key: str, replicas: list[Replica]) -> Replica:
    """Highest-random-weight hashing: a session keeps its replica while the set changes elsewhere."""
    return max(replicas, key=lambda r: hashlib.blake2b(f"{key}|{r.url}".encode(), digest_size=8).digest())
