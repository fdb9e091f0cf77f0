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
    TIMEOUT = "timeout"  # no first token, or no progress, within the tier's timeout: the upstream hangs
    SERVER_ERROR = "server_error"  # the upstream answered 5xx
    BAD_RESPONSE = "bad_response"  # the upstream answered something that is not the OpenAI protocol
    AUTH = "auth_error"  # the upstream refused *our* credentials (401/403): the platform's problem, not the client's
    RATE_LIMITED = "rate_limited"  # the upstream answered 429: overloaded or out of quota
    CIRCUIT_OPEN = "circuit_open"
    DEADLINE = "deadline"  # the whole-request deadline passed while the answer was still progressing
    CLIENT_ERROR = "client_error"  # the upstream answered another 4xx: the request is wrong


# The status the client gets when no tier could serve it, by the last tier's failure.
STATUS_BY_FAILURE = {
    Failure.CONNECT: 503,
    Failure.CIRCUIT_OPEN: 503,
    Failure.TIMEOUT: 504,
    Failure.DEADLINE: 504,
    Failure.SERVER_ERROR: 502,
    Failure.BAD_RESPONSE: 502,
    Failure.AUTH: 502,
    Failure.RATE_LIMITED: 503,
}

# Failures that say the upstream is unhealthy and count towards its circuit breaker. A slow but
# progressing answer (DEADLINE) and the client's own mistakes (CLIENT_ERROR) never do.
BREAKER_FAILURES = frozenset({Failure.CONNECT, Failure.TIMEOUT, Failure.SERVER_ERROR, Failure.BAD_RESPONSE,
                              Failure.AUTH, Failure.RATE_LIMITED})

CLASSIFICATION_RANK = {"public": 0, "private": 1}


class ClassificationError(ValueError):
    pass


def effective_classification(key_default: str, *requested: str | None) -> str:
    """The key's default, raised to private by any request-level value; never lowered."""
    result = key_default if key_default in CLASSIFICATION_RANK else "private"
    for value in requested:
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ClassificationError(f"data_classification must be the string 'public' or 'private', got {value!r}")
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
    # A request that is wrong is wrong everywhere; one that ran out of its whole deadline has no time left.
    return failure not in (Failure.CLIENT_ERROR, Failure.DEADLINE)


def classify_status(status: int) -> Failure | None:
    if status >= 500:
        return Failure.SERVER_ERROR
    if status in (401, 403):
        return Failure.AUTH
    if status == 429:
        return Failure.RATE_LIMITED
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
        """Whether a request may go to this upstream now. In half-open state only one trial may be in
        flight; the caller must end every allowed request with record_success, record_failure or
        abandon (use `attempt()`, which guarantees it)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def abandon(self) -> None:
        """An allowed request ended with no verdict on the upstream's health (cancelled by its client,
        or failed for a reason of its own): free the half-open trial so the next request can try."""
        self.trial_in_flight = False

    def attempt(self) -> "BreakerAttempt":
        return BreakerAttempt(self)

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self.clock()


class BreakerAttempt:
    """One request's use of a breaker, exception-proof: whatever happens between `allowed` and the
    end of the `with` block (an error of any kind, a cancellation), the half-open trial is freed.

        with breaker.attempt() as attempt:
            if not attempt.allowed: ...
            attempt.success()  /  attempt.failure()
    """

    def __init__(self, breaker: CircuitBreaker):
        self.breaker = breaker
        self.allowed = False
        self.decided = False

    def __enter__(self) -> "BreakerAttempt":
        self.allowed = self.breaker.allow_request()
        return self

    def success(self) -> None:
        self.decided = True
        self.breaker.record_success()

    def failure(self) -> None:
        self.decided = True
        self.breaker.record_failure()

    def __exit__(self, *exc_info) -> None:
        if self.allowed and not self.decided:
            self.breaker.abandon()
