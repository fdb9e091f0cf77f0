"""Session fixtures: real Redis, real vLLM (through llm_server), and the platform's services,
each started once per test session. Integration tests talk to them over real connections."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.processes import REPO_ROOT, Process, free_port, python_module, start_redis, wait_healthy

BASE_MODEL = "SmolLM2-135M-Instruct"
SAMPLE_ADAPTER = "peer-v1"
VLLM_START_TIMEOUT = float(os.environ.get("TUTORSTACK_VLLM_START_TIMEOUT", "420"))


def tutorstack_home() -> Path:
    return Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_url(session_dir):
    proc, url = start_redis(session_dir)
    yield url
    proc.stop()


@dataclass
class VllmStack:
    vllm_url: str  # http://127.0.0.1:PORT (OpenAI API under /v1)
    control_url: str  # llm_server control API
    adapters_dir: Path
    api_key: str
    process: Process


def _ensure_model_and_sample_adapter() -> None:
    # Both are cached under TUTORSTACK_HOME; `make test` has already run them, so these are no-ops there.
    for command in (["pull"], ["build-sample-adapter"]):
        subprocess.run(python_module("llm_server", *command), cwd=REPO_ROOT, check=True)


@pytest.fixture(scope="session")
def vllm_stack(session_dir):
    _ensure_model_and_sample_adapter()
    adapters_dir = session_dir / "adapters"  # a copy: tests publish adapters without touching the user's
    shutil.copytree(tutorstack_home() / "adapters" / SAMPLE_ADAPTER, adapters_dir / SAMPLE_ADAPTER)
    vllm_port, control_port = free_port(), free_port()
    api_key = "test-vllm-key"
    env = {**os.environ, "VLLM_PORT": str(vllm_port), "LLM_SERVER_PORT": str(control_port),
           "LLM_ADAPTERS_DIR": str(adapters_dir), "LLM_API_KEY_LOCAL": api_key, "APP_ENV": "test",
           "LLM_SERVER_HOST": "127.0.0.1"}
    proc = Process("llm_server", python_module("llm_server", "serve"), env, session_dir)
    stack = VllmStack(f"http://127.0.0.1:{vllm_port}", f"http://127.0.0.1:{control_port}", adapters_dir, api_key, proc)
    try:
        wait_healthy(f"{stack.control_url}/readyz", proc, VLLM_START_TIMEOUT)
        yield stack
    finally:
        proc.stop(timeout=30)


@dataclass
class Stack:
    gateway_url: str
    ai_service_url: str
    api_key: str  # a private key (the default classification)
    public_api_key: str
    limited_api_key: str  # 3 requests per minute
    shared_token: str
    redis_url: str
    vllm_url: str
    control_url: str
    adapters_dir: Path
    local_proxy: FaultProxy
    cloud_proxy: FaultProxy
    processes: dict[str, Process] = field(default_factory=dict)


def _create_key(env: dict, name: str, classification: str, rpm: int) -> str:
    result = subprocess.run(
        python_module("gateway", "keys", "create", "--name", name, "--classification", classification, "--rpm", str(rpm)),
        env=env, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return result.stdout.strip()


@pytest.fixture(scope="session")
def stack(session_dir, redis_url, vllm_stack):
    local_proxy = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    cloud_proxy = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    token = "test-shared-token"
    ai_port, gateway_port = free_port(), free_port()
    common = {**os.environ, "APP_ENV": "test", "AI_GATEWAY_SHARED_TOKEN": token, "REDIS_URL": redis_url,
              "LOG_LEVEL": "INFO"}
    ai_env = {
        **common,
        "AI_SERVICE_PORT": str(ai_port),
        "LLM_ROUTING_POLICY": "local_first",
        "LLM_ENABLE_CLOUD_FALLBACK_NONPROD": "true",
        "LLM_BASE_URL_LOCAL": f"{local_proxy.url}/v1",
        "LLM_API_KEY_LOCAL": vllm_stack.api_key,
        "LLM_MODEL_LOCAL": BASE_MODEL,
        # The "cloud" tier: a second route to the same real vLLM, through a proxy the tests own.
        "LLM_BASE_URL_CLOUD": f"{cloud_proxy.url}/v1",
        "LLM_API_KEY_CLOUD": vllm_stack.api_key,
        "LLM_MODEL_CLOUD": BASE_MODEL,
        "LLM_LOCAL_TIMEOUT_SEC": "8",
        "LLM_CLOUD_TIMEOUT_SEC": "60",
        "CIRCUIT_FAILURE_THRESHOLD": "3",
        "CIRCUIT_RESET_SEC": "1",
        "GRAPH_RAG_URL": os.environ.get("TEST_GRAPH_RAG_URL", "http://127.0.0.1:9"),
    }
    gateway_env = {**common, "GATEWAY_PORT": str(gateway_port), "AI_SERVICE_URL": f"http://127.0.0.1:{ai_port}",
                   "GATEWAY_MAX_BODY_BYTES": "65536"}
    processes = {}
    try:
        processes["ai_service"] = Process("ai_service", python_module("ai_service"), ai_env, session_dir)
        processes["gateway"] = Process("gateway", python_module("gateway", "serve"), gateway_env, session_dir)
        wait_healthy(f"http://127.0.0.1:{ai_port}/readyz", processes["ai_service"], 60)
        wait_healthy(f"http://127.0.0.1:{gateway_port}/readyz", processes["gateway"], 60)
        yield Stack(
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            ai_service_url=f"http://127.0.0.1:{ai_port}",
            api_key=_create_key(gateway_env, "tests-private", "private", 1000),
            public_api_key=_create_key(gateway_env, "tests-public", "public", 1000),
            limited_api_key=_create_key(gateway_env, "tests-limited", "private", 3),
            shared_token=token,
            redis_url=redis_url,
            vllm_url=vllm_stack.vllm_url,
            control_url=vllm_stack.control_url,
            adapters_dir=vllm_stack.adapters_dir,
            local_proxy=local_proxy,
            cloud_proxy=cloud_proxy,
            processes=processes,
        )
    finally:
        for proc in processes.values():
            proc.stop()
        local_proxy.kill()
        cloud_proxy.kill()


@pytest.fixture
def faults(stack):
    """Hands a test both proxies and restores them (alive, passing through) afterwards."""
    yield stack
    for proxy in (stack.local_proxy, stack.cloud_proxy):
        proxy.revive()
        proxy.set_mode("pass")
    time.sleep(1.2)  # let ai_service's breakers (CIRCUIT_RESET_SEC=1) half-open again
