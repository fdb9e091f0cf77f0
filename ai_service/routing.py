"""The routing policy: which upstream tiers a request may use, and when to fall back.

Pure logic, no I/O and no FastAPI, so the whole decision table is unit-tested.

- local_first: the local vLLM, then the cloud only where fallback is allowed.
- local_only / cloud_only: one tier.
- Fallback is allowed in prod only for requests classified public; outside prod only
  when LLM_ENABLE_CLOUD_FALLBACK_NONPROD is true (and still only for public requests).
- Private requests (student data) never go to the cloud, whatever the policy.
- A stream falls back only until its first byte has reached the client.
- An upstream's 4xx is the client's problem: returned as is, never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class Policy(str, Enum):
    LOCAL_FIRST = "local_first"
    LOCAL_ONLY = "local_only"
    CLOUD_ONLY = "cloud_only"


class Tier(str, Enum):
    LOCAL = "local"
    CLOUD = "cloud"


class Failure(str, Enum):
    CONNECT = "connect_error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"  # the upstream answered 5xx
    CIRCUIT_OPEN = "circuit_open"
    CLIENT_ERROR = "client_error"  # the upstream answered 4xx


# The status the client gets when no tier could serve it, by the last tier's failure.
STATUS_BY_FAILURE = {
    Failure.CONNECT: 503,
    Failure.CIRCUIT_OPEN: 503,
    Failure.TIMEOUT: 504,
    Failure.SERVER_ERROR: 502,
}

CLASSIFICATION_RANK = {"public": 0, "private": 1}


class ClassificationError(ValueError):
    pass


def effective_classification(key_default: str, *requested: str | None) -> str:
    """The key's default, raised to private by any request-level value; never lowered."""
    result = key_default if key_default in CLASSIFICATION_RANK else "private"
    for value in requested:
        if value is None or value == "":
            continue
        value = value.strip().lower()
        if value not in CLASSIFICATION_RANK:
            raise ClassificationError(f"data_classification must be 'public' or 'private', got {value!r}")
        if CLASSIFICATION_RANK[value] > CLASSIFICATION_RANK[result]:
            result = value
    return result


@dataclass(frozen=True)
class RoutingConfig:
    policy: Policy
    app_env: str  # dev | test | prod
    cloud_fallback_nonprod: bool
    cloud_configured: bool


@dataclass(frozen=True)
class RoutePlan:
    tiers: tuple[Tier, ...]
    # Why the cloud is not in the plan, for error messages and logs ("" when it is).
    cloud_excluded_because: str = ""


def cloud_allowed(config: RoutingConfig, classification: str, *, as_fallback: bool) -> tuple[bool, str]:
    if not config.cloud_configured:
        return False, "no cloud upstream is configured"
    if classification != "public":
        return False, "the request carries private data, which never leaves for the cloud"
    if as_fallback and config.app_env != "prod" and not config.cloud_fallback_nonprod:
        return False, f"cloud fallback is off outside prod (APP_ENV={config.app_env}, LLM_ENABLE_CLOUD_FALLBACK_NONPROD=false)"
    return True, ""


def plan_route(config: RoutingConfig, classification: str) -> RoutePlan:
    if config.policy is Policy.LOCAL_ONLY:
        return RoutePlan((Tier.LOCAL,), "LLM_ROUTING_POLICY=local_only")
    if config.policy is Policy.CLOUD_ONLY:
        allowed, why = cloud_allowed(config, classification, as_fallback=False)
        return RoutePlan((Tier.CLOUD,) if allowed else (), why)
    allowed, why = cloud_allowed(config, classification, as_fallback=True)
    return RoutePlan((Tier.LOCAL, Tier.CLOUD) if allowed else (Tier.LOCAL,), why)


def should_fall_back(failure: Failure, *, first_byte_sent: bool) -> bool:
    """Whether a failed attempt may move on to the next tier of the plan."""
    if first_byte_sent:
        return False  # the client already has part of this answer: end the stream in-band instead
    return failure is not Failure.CLIENT_ERROR


def classify_status(status: int) -> Failure | None:
    if status >= 500:
        return Failure.SERVER_ERROR
    if status >= 400:
        return Failure.CLIENT_ERROR
    return None


@dataclass
class CircuitBreaker:
    """Per-upstream breaker: after `failure_threshold` consecutive failures the circuit opens
    for `reset_after_sec`; then one trial request is let through (half-open), whose outcome
    closes or re-opens it."""

    failure_threshold: int = 5
    reset_after_sec: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic)
    consecutive_failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_after_sec:
            return "half_open"
        return "open"

    def allow_request(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self.clock()
