"""Through the real gateway and ai_service: /v1/health with an API key, the status page, a core
service going down and up again (the local LLM tier cut at its proxy), and `make smoke`'s script."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def report(stack, **params) -> dict:
    response = httpx.get(f"{stack.gateway_url}/v1/health", params=params,
                         headers={"authorization": f"Bearer {stack.api_key}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(predicate, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s")


def statuses(body: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in body["services"]}


def wait_report(stack, service: str, wanted: tuple[str, ...], timeout: float, **params) -> dict:
    """The first report in which `service` has one of the `wanted` statuses."""
    def attempt():
        body = report(stack, **params)
        return body if statuses(body)[service] in wanted else None

    return wait_for(attempt, timeout)


def test_health_through_the_gateway(stack, health):
    body = wait_report(stack, "ai_service", ("up", "degraded", "down"), 15)
    by_name = {s["name"]: s for s in body["services"]}
    for core in ("gateway", "ai_service", "llm_server", "vllm", "graphrag"):
        assert by_name[core]["status"] in ("up", "degraded"), by_name[core]
        assert by_name[core]["latency_ms"] is not None and by_name[core]["last_change"]
    assert by_name["writing"]["status"] == "down" and by_name["writing"]["optional"]
    assert body["status"] == "degraded"  # only the optional service is down
    # any valid key, a student's too; none: 401 at the gateway
    student = stack.key_for("health-student", role="student", user_id="s-health")
    assert httpx.get(f"{stack.gateway_url}/v1/health", headers={"authorization": f"Bearer {student}"},
                     timeout=10).status_code == 200
    assert httpx.get(f"{stack.gateway_url}/v1/health", timeout=10).status_code == 401
    page = httpx.get(f"{stack.gateway_url}/v1/health/status", headers={"authorization": f"Bearer {stack.api_key}"},
                     timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "graphrag" in page.text and "<table>" in page.text
    # the service itself: its own token only
    assert httpx.get(f"{health.url}/v1/health", timeout=10).status_code == 401
    assert httpx.get(f"{health.url}/status", timeout=10).status_code == 401
    assert httpx.get(f"{health.url}/status", headers={"authorization": f"Bearer {health.token}"},
                     timeout=10).status_code == 200
    metrics = httpx.get(f"{health.url}/metrics", timeout=10).text
    assert 'tutorstack_service_up{service="gateway"} 1.0' in metrics
    assert 'tutorstack_service_up{service="writing"} 0.0' in metrics
    assert 'tutorstack_health_check_seconds_count{service="vllm"}' in metrics


def test_core_service_down_and_up(faults, health):
    stack = faults
    before = wait_report(stack, "ai_service", ("up", "degraded"), 15)
    up_since = {s["name"]: s for s in before["services"]}["ai_service"]["last_change"]
    stack.local_proxy.kill()  # ai_service's required local tier is gone: it and the gateway are not ready
    down = wait_report(stack, "ai_service", ("down",), 20)
    ai = {s["name"]: s for s in down["services"]}["ai_service"]
    assert down["status"] == "down" and ai["http_status"] == 503 and "local_llm" in ai["failing"]
    assert ai["last_change"] > up_since
    stack.local_proxy.revive()
    back = wait_report(stack, "ai_service", ("up", "degraded"), 20, history=20)
    ai_back = {s["name"]: s for s in back["services"]}["ai_service"]
    assert ai_back["last_change"] > ai["last_change"]
    assert "down" in [c["status"] for c in ai_back["history"]], "the outage is in the Redis history"


def test_smoke_script_passes_and_fails(stack, health):
    env = {**os.environ, "GATEWAY_URL": stack.gateway_url, "API_KEY": stack.api_key, "SMOKE_MAX_TOKENS": "8",
           "SMOKE_TIMEOUT": "90"}
    wait_report(stack, "ai_service", ("up", "degraded"), 20)
    ok = subprocess.run([sys.executable, str(ROOT / "scripts" / "smoke.py")], env=env, capture_output=True,
                        text=True, timeout=400)
    print(ok.stdout)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("PASS") == 8 and "FAIL" not in ok.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "smoke.py")], env={**env, "API_KEY": "sk-wrong"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "FAIL  POST /v1/chat (tutor)" in bad.stdout
    assert "PASS  GET /healthz" in bad.stdout  # the open endpoint still passes
