"""The llama.cpp engine's test stack: llm_server with LLM_ENGINE=llamacpp (llama-server on the pulled GGUF,
the sample adapter converted to GGUF LoRA), and ai_service + gateway pointing at it, once per session.

The vLLM stack of tests/conftest.py and this one expose the same objects (VllmStack, Stack), so the
same engine-independent tests run against both (see same_tests/ and test_contract.py)."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import free_port
from tests.support.stack import start_platform, start_vllm, tutorstack_home


@pytest.fixture(scope="session")
def llamacpp_engine(session_dir):
    if not (tutorstack_home() / "venv-llamacpp" / "bin" / "llama-server").is_file():
        pytest.fail("llama-server is not built: run `make setup` (scripts/build_llamacpp.sh)")
    engine = start_vllm(session_dir / "llamacpp", engine="llamacpp")
    yield engine
    engine.process.stop(timeout=30)


@pytest.fixture(scope="session")
def llamacpp_stack(session_dir, redis_url, llamacpp_engine):
    """The platform over llama.cpp, shaped like tests/conftest.py's `stack` (no graphrag: not engine-related)."""
    local_proxy = FaultProxy(llamacpp_engine.vllm_url, free_port()).start()
    cloud_proxy = FaultProxy(llamacpp_engine.vllm_url, free_port()).start()
    workdir = session_dir / "llamacpp-platform"
    platform = start_platform(
        workdir, redis_url, local_url=local_proxy.url, local_api_key=llamacpp_engine.api_key, cloud_url=cloud_proxy.url,
        ai_env={"LLM_ROUTING_POLICY": "local_first", "LLM_ENABLE_CLOUD_FALLBACK_NONPROD": "true",
                "LLM_LOCAL_TIMEOUT_SEC": "12", "LLM_CLOUD_TIMEOUT_SEC": "60",
                "CIRCUIT_FAILURE_THRESHOLD": "3", "CIRCUIT_RESET_SEC": "1"},
        gateway_env={"GATEWAY_MAX_BODY_BYTES": "65536"},
    )
    try:
        yield Stack(
            gateway_url=platform.gateway_url, ai_service_url=platform.ai_service_url,
            api_key=platform.create_key("llamacpp-private", "private"),
            public_api_key=platform.create_key("llamacpp-public", "public"),
            limited_api_key=platform.create_key("llamacpp-limited", "private", rpm=3),
            shared_token=platform.shared_token, redis_url=redis_url, vllm_url=llamacpp_engine.vllm_url,
            control_url=llamacpp_engine.control_url, graphrag_url="", adapters_dir=llamacpp_engine.adapters_dir,
            local_proxy=local_proxy, cloud_proxy=cloud_proxy, processes=platform.processes, platform=platform,
            session_dir=workdir)
    finally:
        platform.stop()
        local_proxy.kill()
        cloud_proxy.kill()
