"""The service as a whole: auth, /v1/health, the status page, metrics, history in real Redis
surviving a restart (real sockets to the polled servers; the app through Starlette's TestClient)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from services.health.app import create_app
from services.health.settings import HealthSettings
from tests.health.servers import FakeService

TOKEN = "test-health-token"


@pytest.fixture
def services():
    up, flaky = FakeService().start(), FakeService().start()
    yield up, flaky
    up.stop()
    flaky.stop()


def make_settings(redis_url: str, prefix: str, up: FakeService, flaky: FakeService, **extra) -> HealthSettings:
    gone = FakeService()  # a later service that is not running
    values = dict(app_env="test", service_token=TOKEN, redis_url=redis_url, redis_prefix=prefix,
                  targets=f"gateway={up.url},ai_service={flaky.url},practice={gone.url}",
                  optional_targets="practice", interval_sec=0.1, timeout_sec=0.5, history_size=5)
    return HealthSettings(**{**values, **extra})


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def auth() -> dict:
    return {"authorization": f"Bearer {TOKEN}"}


def test_health_history_metrics_and_restart(redis_url, services):
    up, flaky = services
    prefix = f"health-test-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(redis_url, prefix, up, flaky)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/health").status_code == 401
        assert client.get("/v1/health", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/status").status_code == 401
        assert client.get("/v1/health/status").status_code == 401
        assert client.get("/v1/health").json()["error"]["code"] == "invalid_service_token"
        assert client.get("/healthz").status_code == 200
        wait_for(lambda: client.get("/readyz").status_code == 200)

        report = client.get("/v1/health", headers=auth()).json()
        by_name = {s["name"]: s for s in report["services"]}
        assert report["status"] == "degraded"  # practice (optional) is not running
        assert by_name["gateway"]["status"] == "up" and by_name["gateway"]["latency_ms"] > 0
        assert by_name["practice"]["status"] == "down" and by_name["practice"]["optional"] is True
        assert by_name["gateway"]["last_change"] and by_name["gateway"]["history"] == []
        first_change = by_name["ai_service"]["last_change"]

        flaky.mode = "not_ready"
        down = wait_for(lambda: next((s for s in client.get("/v1/health", headers=auth()).json()["services"]
                                      if s["name"] == "ai_service" and s["status"] == "down"), None))
        assert down["last_change"] > first_change and down["http_status"] == 503 and down["failing"] == ["upstream"]
        assert client.get("/v1/health", headers=auth()).json()["status"] == "down"

        # history: a capped list in Redis, newest first
        wait_for(lambda: len(client.get("/v1/health?history=5", headers=auth()).json()["services"][1]["history"]) == 5)
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        time.sleep(0.3)
        assert r.llen(f"{prefix}history:ai_service") == 5
        history = client.get("/v1/health?history=5", headers=auth()).json()["services"][1]["history"]
        assert history[0]["status"] == "down" and history[0]["at"] >= history[-1]["at"]
        assert client.get("/v1/health?history=6", headers=auth()).status_code == 400

        page = client.get("/status", headers=auth())
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "ai_service" in page.text and ">down<" in page.text and "HTTP 503" in page.text
        assert client.get("/v1/health/status", headers={"x-tutorstack-service-token": TOKEN}).text.count("<tr>") == 4

        metrics = client.get("/metrics").text
        assert 'tutorstack_service_up{service="gateway"} 1.0' in metrics
        assert 'tutorstack_service_up{service="ai_service"} 0.0' in metrics
        assert 'tutorstack_health_check_seconds_count{service="practice"}' in metrics
        went_down = down["last_change"]

    # a restart keeps the last change (the service is still down) and the history
    with TestClient(create_app(make_settings(redis_url, prefix, up, flaky, interval_sec=60))) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        svc = client.get("/v1/health?history=5", headers=auth()).json()["services"][1]
        assert svc["status"] == "down" and svc["last_change"] == went_down
        assert len(svc["history"]) == 5


def test_redis_down_still_answers(services):
    up, flaky = services
    dead_redis = f"redis://127.0.0.1:{FakeService().port}/0"
    with TestClient(create_app(make_settings(dead_redis, "x:", up, flaky))) as client:
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r.json())
        assert ready["degraded"] == ["redis"]
        body = client.get("/v1/health?history=3", headers=auth()).json()
        assert {s["name"]: s["status"] for s in body["services"]}["gateway"] == "up"
