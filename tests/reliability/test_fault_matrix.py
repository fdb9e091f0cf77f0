"""The fault matrix over the real stack: vLLM killed, hung, slow or cutting streams; Redis restarted
or down for 10 s; graphrag down; ai_service restarted under load. In every cell every request
either succeeds or gets an OpenAI-shaped error within its deadline, nothing hangs, and no private
request reaches the cloud tier (counted at the cloud's fault proxy). The figures of each cell go to
bench/results/fault_matrix.md.

This module runs its own small platform (Redis with AOF, ai_service, gateway, two fault proxies in
front of the session's vLLM) so that killing Redis or ai_service here leaves other tests alone."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.processes import REPO_ROOT, Process, free_port, python_module, start_redis, wait_healthy
from tests.support.stack import start_platform

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT = 90.0  # far above every deadline of the stack below: reaching it means "hung"
RESULTS = REPO_ROOT / "bench" / "results" / "fault_matrix.md"


@dataclass
class Cell:
    name: str
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    hung: int = 0
    latencies: list[float] = field(default_factory=list)
    private_to_cloud: int = 0

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values()) + len(self.malformed) + self.hung

    def row(self) -> str:
        errors = ", ".join(f"{status}×{n}" for status, n in sorted(self.errors.items())) or "–"
        p50 = statistics.median(self.latencies) if self.latencies else 0
        return (f"| {self.name} | {self.total} | {self.ok} | {errors} | {len(self.malformed)} | {self.hung} | "
                f"{p50:.2f} | {max(self.latencies, default=0):.2f} | {self.private_to_cloud} |")


@pytest.fixture(scope="module")
def fault_stack(vllm_stack, graphrag_url, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("faults")
    redis_proc, redis_url = start_redis_with_aof(workdir)
    local = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    cloud = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    graphrag = FaultProxy(graphrag_url, free_port()).start()
    platform = start_platform(
        workdir, redis_url, local_url=local.url, local_api_key=vllm_stack.api_key, cloud_url=cloud.url,
        graphrag_url=graphrag.url,
        ai_env={"LLM_ENABLE_CLOUD_FALLBACK_NONPROD": "true", "LLM_LOCAL_TIMEOUT_SEC": "15",
                "LLM_REQUEST_DEADLINE_SEC": "40", "CIRCUIT_FAILURE_THRESHOLD": "3", "CIRCUIT_RESET_SEC": "2",
                "GRAPH_RAG_TIMEOUT_SEC": "3"})
    state = {"platform": platform, "redis": redis_proc, "redis_url": redis_url, "local": local, "cloud": cloud,
             "graphrag": graphrag, "workdir": workdir,
             "private": platform.create_key("faults-private", "private", rpm=100000),
             "public": platform.create_key("faults-public", "public", rpm=100000)}
    yield state
    platform.stop()
    state["redis"].stop()
    for proxy in (local, cloud, graphrag):
        proxy.kill()


def start_redis_with_aof(workdir: Path, port: int | None = None) -> tuple[Process, str]:
    return start_redis(workdir, port=port, durable=True, data_dir=workdir / "redis-aof")


def one_request(state, i: int, *, stream: bool, private: bool, path: str = "/v1/chat/completions") -> tuple:
    marker = f"fault-{'private' if private else 'public'}-{uuid.uuid4().hex[:10]}"
    body = {"model": "SmolLM2-135M-Instruct", "max_tokens": 8, "stream": stream,
            "messages": [{"role": "user", "content": f"Say hi. ({marker})"}]}
    if path == "/v1/chat":
        body = {"mode": "tutor_rag", "max_tokens": 8, "stream": stream, "messages": body["messages"]}
    key = state["private"] if private else state["public"]
    started = time.monotonic()
    try:
        with httpx.stream("POST", f"{state['platform'].gateway_url}{path}", json=body, timeout=CLIENT_TIMEOUT,
                          headers={"authorization": f"Bearer {key}"}) as response:
            raw = response.read()
        elapsed = time.monotonic() - started
    except httpx.TimeoutException:
        return "hung", None, time.monotonic() - started, marker, ""
    except httpx.HTTPError as exc:  # the gateway itself refused the connection: not OpenAI-shaped
        return "malformed", None, time.monotonic() - started, marker, repr(exc)
    text = raw.decode(errors="replace")
    if response.status_code >= 400:
        try:
            error = json.loads(text)["error"]
            assert set(error) == {"message", "type", "param", "code"}
            return "error", response.status_code, elapsed, marker, ""
        except Exception:
            return "malformed", response.status_code, elapsed, marker, text[:200]
    if stream:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        if events and events[-1] == "[DONE]":
            return "ok", 200, elapsed, marker, ""
        try:  # a stream ended by an in-band OpenAI error event
            error = json.loads(events[-1])["error"]
            assert set(error) == {"message", "type", "param", "code"}
            return "error", error.get("code") and 502, elapsed, marker, ""
        except Exception:
            return "malformed", 200, elapsed, marker, text[-200:]
    return ("ok" if json.loads(text).get("choices") else "malformed"), 200, elapsed, marker, text[:200]


def run_cell(state, name: str, *, requests: int = 12, concurrency: int = 4, during=None, path="/v1/chat/completions",
             pace: float = 0.0) -> Cell:
    cell = Cell(name)
    cloud_before = len(state["cloud"].bodies_seen)
    plan = [(i, i % 2 == 0, i % 3 != 0) for i in range(requests)]  # (i, stream, private): a mix
    markers = []

    def go(args):
        i, stream, private = args
        if pace:
            time.sleep(pace * i / concurrency)
        return one_request(state, i, stream=stream, private=private, path=path)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(go, args) for args in plan]
        if during is not None:
            during()
        for future in futures:
            outcome, status, elapsed, marker, detail = future.result()
            markers.append(marker)
            cell.latencies.append(elapsed)
            if outcome == "ok":
                cell.ok += 1
            elif outcome == "error":
                cell.errors[status] = cell.errors.get(status, 0) + 1
            elif outcome == "hung":
                cell.hung += 1
            else:
                cell.malformed.append(f"{status}: {detail}")
    cloud_bodies = b"".join(state["cloud"].bodies_seen[cloud_before:])
    cell.private_to_cloud = sum(1 for m in markers if m.startswith("fault-private") and m.encode() in cloud_bodies)
    return cell


def restore(state) -> None:
    state["local"].revive()
    state["local"].set_mode("pass")
    state["graphrag"].revive()
    time.sleep(2.2)  # CIRCUIT_RESET_SEC=2: the breaker half-opens again ...
    one_request(state, 0, stream=False, private=False)  # ... and one trial closes it: each cell starts clean


def restart_redis(state, down_for: float) -> None:
    old = state["redis"]
    os.killpg(old.popen.pid, signal.SIGKILL)
    old.popen.wait(timeout=5)
    time.sleep(down_for)
    port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
    state["redis"], _ = start_redis_with_aof(state["workdir"], port)


def restart_ai_service(state) -> None:
    platform = state["platform"]
    proc = platform.processes["ai_service"]
    time.sleep(1.0)  # under load
    proc.stop(timeout=10)
    platform.processes["ai_service"] = Process("ai_service-restarted", python_module("ai_service"),
                                               platform.ai_env, state["workdir"])
    wait_healthy(f"{platform.ai_service_url}/healthz", platform.processes["ai_service"], 60)


def test_fault_matrix(fault_stack):
    state = fault_stack
    cells: list[Cell] = []

    def cell(name, setup=None, **kwargs):
        if setup:
            setup()
        try:
            cells.append(run_cell(state, name, **kwargs))
        finally:
            restore(state)

    cell("no fault (baseline)")
    cell("vLLM killed", setup=state["local"].kill)
    cell("vLLM hung", setup=lambda: state["local"].set_mode("hang"), requests=8)
    cell("vLLM slow (0.4 s per chunk)", setup=lambda: state["local"].set_mode("slow", chunk_delay=0.4), requests=8)
    cell("vLLM cuts streams mid-way", setup=lambda: state["local"].set_mode("cut_after_first_chunk"))
    cell("vLLM stalls after first chunk", setup=lambda: state["local"].set_mode("stall_after_first_chunk"), requests=8)
    cell("Redis restarted (kill -9)", during=lambda: restart_redis(state, 0.0), requests=16, pace=0.5)
    cell("Redis down for 10 s", during=lambda: restart_redis(state, 10.0), requests=16, pace=1.5)
    cell("graphrag down (RAG chat)", setup=state["graphrag"].kill, path="/v1/chat", requests=8)
    cell("ai_service restarted under load", during=lambda: restart_ai_service(state), requests=16, pace=0.6)

    lines = ["| fault | requests | ok | OpenAI errors (status×n) | malformed | hung | p50 s | max s | private→cloud |",
             "|---|---|---|---|---|---|---|---|---|", *[c.row() for c in cells]]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Fault matrix (tests/reliability/test_fault_matrix.py)\n\n"
                       f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; "
                       "a mix of streamed and JSON, private and public requests, 4 at a time.\n\n"
                       + "\n".join(lines) + "\n")
    print("\n".join(lines))
    for c in cells:
        assert not c.malformed, (c.name, c.malformed[:3])
        assert c.hung == 0, c.name
        assert c.private_to_cloud == 0, c.name
        assert max(c.latencies) < 60, c.name  # within the stack's deadlines (40 s) plus the gateway's work
    assert cells[0].ok == cells[0].total  # the baseline has no errors
