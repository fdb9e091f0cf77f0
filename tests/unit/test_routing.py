"""The routing policy's whole decision table, the circuit breaker and classification rules."""

import itertools

import pytest

from ai_service.routing import (
    CircuitBreaker,
    ClassificationError,
    Failure,
    Policy,
    RoutingConfig,
    Tier,
    classify_status,
    BREAKER_FAILURES,
    STATUS_BY_FAILURE,
    effective_classification,
    plan_route,
    should_fall_back,
)

LOCAL, CLOUD = Tier.LOCAL, Tier.CLOUD


def expected_tiers(policy, env, classification, nonprod_flag, cloud_configured):
    """The architecture page's rules, written independently of the implementation."""
    cloud_ok = cloud_configured and classification == "public"
    if policy == "local_only":
        return (LOCAL,)
    if policy == "cloud_only":
        return (CLOUD,) if cloud_ok else ()
    fallback_ok = cloud_ok and (env == "prod" or nonprod_flag)
    return (LOCAL, CLOUD) if fallback_ok else (LOCAL,)


TABLE = list(itertools.product(
    ["local_first", "local_only", "cloud_only"], ["dev", "test", "prod"], ["public", "private"], [True, False], [True, False],
))


@pytest.mark.parametrize("policy,env,classification,nonprod_flag,cloud_configured", TABLE)
def test_plan_matches_decision_table(policy, env, classification, nonprod_flag, cloud_configured):
    config = RoutingConfig(Policy(policy), env, nonprod_flag, cloud_configured)
    plan = plan_route(config, classification)
    assert plan.tiers == expected_tiers(policy, env, classification, nonprod_flag, cloud_configured)
    if CLOUD not in plan.tiers:
        assert plan.cloud_excluded_because  # the client is told why there is no cloud fallback


def test_private_never_reaches_cloud_in_any_configuration():
    for policy, env, _, flag, configured in TABLE:
        plan = plan_route(RoutingConfig(Policy(policy), env, flag, configured), "private")
        assert CLOUD not in plan.tiers


def test_prod_falls_back_only_for_public():
    config = RoutingConfig(Policy.LOCAL_FIRST, "prod", False, True)
    assert plan_route(config, "public").tiers == (LOCAL, CLOUD)
    plan = plan_route(config, "private")
    assert plan.tiers == (LOCAL,) and "private" in plan.cloud_excluded_because


def test_nonprod_needs_the_flag():
    assert plan_route(RoutingConfig(Policy.LOCAL_FIRST, "dev", False, True), "public").tiers == (LOCAL,)
    assert plan_route(RoutingConfig(Policy.LOCAL_FIRST, "dev", True, True), "public").tiers == (LOCAL, CLOUD)
    why = plan_route(RoutingConfig(Policy.LOCAL_FIRST, "test", False, True), "public").cloud_excluded_because
    assert "LLM_ENABLE_CLOUD_FALLBACK_NONPROD" in why


@pytest.mark.parametrize("failure,first_byte_sent,expected", [
    (Failure.CONNECT, False, True),
    (Failure.TIMEOUT, False, True),
    (Failure.SERVER_ERROR, False, True),
    (Failure.CIRCUIT_OPEN, False, True),
    (Failure.CLIENT_ERROR, False, False),
    (Failure.CONNECT, True, False),
    (Failure.TIMEOUT, True, False),
    (Failure.SERVER_ERROR, True, False),
    (Failure.CIRCUIT_OPEN, True, False),
    (Failure.CLIENT_ERROR, True, False),
    (Failure.AUTH, False, True),
    (Failure.RATE_LIMITED, False, True),
    (Failure.BAD_RESPONSE, False, True),
    (Failure.DEADLINE, False, False),  # no time is left for another tier
])
def test_fallback_by_failure_kind_and_stream_progress(failure, first_byte_sent, expected):
    assert should_fall_back(failure, first_byte_sent=first_byte_sent) is expected


@pytest.mark.parametrize("status,failure", [(200, None), (201, None), (400, Failure.CLIENT_ERROR),
                                            (404, Failure.CLIENT_ERROR), (422, Failure.CLIENT_ERROR),
                                            (401, Failure.AUTH), (403, Failure.AUTH), (429, Failure.RATE_LIMITED),
                                            (500, Failure.SERVER_ERROR), (503, Failure.SERVER_ERROR)])
def test_status_classification(status, failure):
    assert classify_status(status) is failure


@pytest.mark.parametrize("key_default,requested,expected", [
    ("private", [None, None], "private"),
    ("public", [None, None], "public"),
    ("public", ["private", None], "private"),   # a request may raise its classification
    ("public", [None, "private"], "private"),
    ("private", ["public", "public"], "private"),  # ...but never lower it
    ("public", ["PUBLIC", ""], "public"),
    ("bogus-default", [None], "private"),  # an unknown key default is treated as private
])
def test_effective_classification(key_default, requested, expected):
    assert effective_classification(key_default, *requested) == expected


def test_invalid_classification_is_rejected():
    with pytest.raises(ClassificationError):
        effective_classification("public", "secret")


@pytest.mark.parametrize("value", [1, ["private"], {"level": "private"}, True])
def test_non_string_classification_is_a_classification_error_not_a_crash(value):
    with pytest.raises(ClassificationError, match="string"):
        effective_classification("public", value)


def test_upstream_errors_map_to_platform_statuses():
    # An upstream refusing our credentials or rate-limiting us is the platform's problem (5xx), not the client's key.
    assert STATUS_BY_FAILURE[Failure.AUTH] == 502 and STATUS_BY_FAILURE[Failure.RATE_LIMITED] == 503
    assert {Failure.AUTH, Failure.RATE_LIMITED, Failure.TIMEOUT} <= BREAKER_FAILURES
    assert Failure.DEADLINE not in BREAKER_FAILURES and Failure.CLIENT_ERROR not in BREAKER_FAILURES


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_reset():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_sec=10, clock=clock)
    for _ in range(2):
        assert breaker.allow_request()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow_request()
    clock.now = 9.9
    assert not breaker.allow_request()
    clock.now = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow_request()       # one trial request
    assert not breaker.allow_request()   # ...and only one while it is in flight
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow_request()


def test_breaker_failed_trial_reopens_for_a_full_period():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_sec=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 9.9
    assert not breaker.allow_request()
    clock.now = 10
    assert breaker.allow_request()


def test_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=2, reset_after_sec=5, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def _open_then_half_open(clock) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_sec=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.state == "half_open"
    return breaker


@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("bad json"), KeyError("x"), OSError("io"),
                                   GeneratorExit(), KeyboardInterrupt()])
def test_breaker_trial_is_freed_whatever_the_trial_raises(error):
    clock = FakeClock()
    breaker = _open_then_half_open(clock)
    with pytest.raises(type(error)):
        with breaker.attempt() as attempt:
            assert attempt.allowed
            assert not breaker.allow_request()  # the one trial is in flight
            raise error
    # The trial ended with no verdict: the next request is the new trial, not refused for ever.
    with breaker.attempt() as attempt:
        assert attempt.allowed
        attempt.success()
    assert breaker.state == "closed"


def test_breaker_trial_is_freed_when_the_request_is_cancelled():
    import asyncio

    clock = FakeClock()
    breaker = _open_then_half_open(clock)
    started = asyncio.Event()

    async def trial():
        with breaker.attempt() as attempt:
            assert attempt.allowed
            started.set()
            await asyncio.sleep(3600)  # a hung upstream; the client goes away

    async def main():
        task = asyncio.create_task(trial())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert breaker.allow_request()


def test_breaker_attempt_verdicts():
    clock = FakeClock()
    breaker = _open_then_half_open(clock)
    with breaker.attempt() as attempt:
        attempt.failure()
    assert breaker.state == "open" and not breaker.attempt().__enter__().allowed
    clock.now = 10
    with breaker.attempt() as attempt:
        attempt.success()
    assert breaker.state == "closed"
    # A refused attempt (open circuit) has nothing to free.
    breaker.record_failure()
    with breaker.attempt() as refused:
        assert not refused.allowed
    assert breaker.state == "open"
