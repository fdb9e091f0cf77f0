"""The poller against real local HTTP servers: statuses, timeouts, a service going down and up."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram

from services.health.poller import DEGRADED, DOWN, UNKNOWN, UP, Poller, overall_status, probe
from services.health.settings import DEFAULT_TARGETS, HealthSettings
from services.health.targets import Target, parse_targets
from tests.health.servers import FakeService


@pytest.fixture
def fake():
    service = FakeService().start()
    yield service
    service.stop()


def test_parse_targets_and_defaults():
    targets = parse_targets(DEFAULT_TARGETS, optional={"guided"})
    by_name = {t.name: t for t in targets}
    assert by_name["gateway"].url == "http://localhost:8080/readyz"
    assert by_name["vllm"].url == "http://localhost:8000/health"
    assert by_name["guided"].optional and not by_name["gateway"].optional
    assert {"gateway", "ai_service", "llm_server", "vllm", "graphrag", "guided", "writing", "practice"} == set(by_name)
    assert [t.name for t in parse_targets(" a=http://x:1/readyz ,\n b=https://y/health,")] == ["a", "b"]
    for bad in ("", "a", "a=ftp://x", "A=http://x", "a=http://x,a=http://y", "=http://x"):
        with pytest.raises(ValueError):
            parse_targets(bad)


def test_settings_reject_bad_targets_and_need_a_token_outside_dev(monkeypatch):
    monkeypatch.setenv("HEALTH_TARGETS", "gateway=localhost:8080")
    with pytest.raises(ValueError):
        HealthSettings(app_env="dev")
    monkeypatch.delenv("HEALTH_TARGETS")
    monkeypatch.delenv("HEALTH_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HEALTH_API_TOKEN"):
        HealthSettings(app_env="prod")
    assert HealthSettings(app_env="prod", service_token="t").port == 8005


def test_statuses_from_real_servers(fake):
    others = {mode: FakeService(mode, slow_sec=1.5).start() for mode in ("degraded", "not_ready", "slow", "garbage")}
    gone = FakeService()  # never started: connection refused
    try:
        targets = [Target("ok", fake.url), Target("gone", gone.url, optional=True)] + \
                  [Target(mode, svc.url) for mode, svc in others.items()]
        registry = CollectorRegistry()
        up = Gauge("tutorstack_service_up", "", ["service"], registry=registry)
        seconds = Histogram("tutorstack_health_check_seconds", "", ["service"], registry=registry)
        poller = Poller(targets, timeout_sec=0.5, up_gauge=up, latency_histogram=seconds)

        async def run():
            started = time.perf_counter()
            checks = {c.service: c for c in await poller.run_once()}
            elapsed = time.perf_counter() - started
            await poller.stop()
            return checks, elapsed

        checks, elapsed = asyncio.run(run())
        assert elapsed < 1.4, f"checks must run concurrently with the timeout ({elapsed:.2f}s)"
        assert checks["ok"].status == UP and checks["ok"].http_status == 200 and checks["ok"].latency_ms > 0
        assert checks["degraded"].status == DEGRADED and checks["degraded"].failing == ["graphrag"]
        assert checks["not_ready"].status == DOWN and checks["not_ready"].http_status == 503
        assert checks["not_ready"].failing == ["upstream"] and checks["not_ready"].error == "HTTP 503"
        assert checks["slow"].status == DOWN and "timeout" in checks["slow"].error
        assert checks["garbage"].status == UP  # a 200 without a readiness body (vLLM's /health) is up
        assert checks["gone"].status == DOWN and "refused" in checks["gone"].error
        assert registry.get_sample_value("tutorstack_service_up", {"service": "ok"}) == 1
        assert registry.get_sample_value("tutorstack_service_up", {"service": "degraded"}) == 1
        assert registry.get_sample_value("tutorstack_service_up", {"service": "slow"}) == 0
        assert registry.get_sample_value("tutorstack_service_up", {"service": "gone"}) == 0
        assert registry.get_sample_value("tutorstack_health_check_seconds_count", {"service": "slow"}) == 1
        assert registry.get_sample_value("tutorstack_health_check_seconds_sum", {"service": "slow"}) >= 0.4
        assert overall_status(list(poller.states.values())) == "down"  # core services down
    finally:
        for svc in others.values():
            svc.stop()


def test_down_and_up_again_moves_last_change(fake):
    poller = Poller([Target("svc", fake.url)], timeout_sec=0.5)

    async def run():
        state = poller.states["svc"]
        assert state.status == UNKNOWN and state.last_change is None
        await poller.run_once()
        first_change = state.last_change
        assert state.status == UP and first_change is not None
        await asyncio.sleep(0.05)
        await poller.run_once()
        assert state.last_change == first_change, "no change, no new last_change"
        fake.stop()
        await poller.run_once()
        went_down = state.last_change
        assert state.status == DOWN and went_down > first_change
        await poller.run_once()
        assert state.last_change == went_down
        fake.start()  # same port again
        await poller.run_once()
        assert state.status == UP and state.last_change > went_down
        await poller.stop()

    asyncio.run(run())


def test_poller_loop_runs_on_the_interval(fake):
    poller = Poller([Target("svc", fake.url)], interval_sec=0.1, timeout_sec=0.5)

    async def run():
        poller.start()
        await asyncio.sleep(0.55)
        await poller.stop()

    asyncio.run(run())
    assert 4 <= poller.rounds <= 7 and fake.hits == poller.rounds


def test_optional_services_degrade_not_down(fake):
    gone = FakeService()
    poller = Poller([Target("core", fake.url), Target("later", gone.url, optional=True)], timeout_sec=0.5)

    async def run():
        await poller.run_once()
        await poller.stop()

    asyncio.run(run())
    assert overall_status(list(poller.states.values())) == "degraded"


def test_probe(fake):
    assert asyncio.run(probe(fake.url)).status == UP
    fake.mode = "not_ready"
    assert asyncio.run(probe(fake.url)).status == DOWN
