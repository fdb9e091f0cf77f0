"""Session fixtures: real Redis, real vLLM (through llm_server), and the platform's services,
each started once per test session. Integration tests talk to them over real connections."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.processes import Process, free_port, start_redis
from tests.support.stack import Platform, start_graphrag, start_platform, start_vllm


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_url(session_dir):
    proc, url = start_redis(session_dir)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def vllm_stack(session_dir):
    stack = start_vllm(session_dir)
    yield stack
    stack.process.stop(timeout=30)


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
    graphrag_url: str
    adapters_dir: Path
    local_proxy: FaultProxy
    cloud_proxy: FaultProxy
    processes: dict[str, Process] = field(default_factory=dict)
    platform: Platform | None = None  # start_internal_service(stack.platform, ...) brings up writing/guided/...
    session_dir: Path | None = None

    def key_for(self, name: str, *, role: str = "student", user_id: str | None = None,
                classification: str = "private", rpm: int = 1000) -> str:
        """A fresh API key with a role and an optional user id."""
        return self.platform.create_key(name, classification, rpm=rpm, role=role, user_id=user_id)


@pytest.fixture(scope="session")
def graphrag_url(session_dir):
    proc, url = start_graphrag(session_dir)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def stack(session_dir, redis_url, vllm_stack, graphrag_url):
    # Both tiers reach the same real vLLM through proxies the tests own, so tests can kill,
    # hang or cut the "local" tier and watch the "cloud" tier take over.
    local_proxy = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    cloud_proxy = FaultProxy(vllm_stack.vllm_url, free_port()).start()
    platform = start_platform(
        session_dir, redis_url, local_url=local_proxy.url, local_api_key=vllm_stack.api_key, cloud_url=cloud_proxy.url,
        graphrag_url=graphrag_url,
        ai_env={"LLM_ROUTING_POLICY": "local_first", "LLM_ENABLE_CLOUD_FALLBACK_NONPROD": "true",
                "LLM_LOCAL_TIMEOUT_SEC": "12", "LLM_CLOUD_TIMEOUT_SEC": "60",
                "CIRCUIT_FAILURE_THRESHOLD": "3", "CIRCUIT_RESET_SEC": "1"},
        gateway_env={"GATEWAY_MAX_BODY_BYTES": "65536"},
    )
    try:
        yield Stack(
            gateway_url=platform.gateway_url,
            ai_service_url=platform.ai_service_url,
            api_key=platform.create_key("tests-private", "private"),
            public_api_key=platform.create_key("tests-public", "public"),
            limited_api_key=platform.create_key("tests-limited", "private", rpm=3),
            shared_token=platform.shared_token,
            redis_url=redis_url,
            vllm_url=vllm_stack.vllm_url,
            control_url=vllm_stack.control_url,
            graphrag_url=graphrag_url,
            adapters_dir=vllm_stack.adapters_dir,
            local_proxy=local_proxy,
            cloud_proxy=cloud_proxy,
            processes=platform.processes,
            platform=platform,
            session_dir=session_dir,
        )
    finally:
        platform.stop()
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
