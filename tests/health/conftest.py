"""The health service, started once per test session on the port ai_service already points at,
polling the test stack's own services every second."""

from __future__ import annotations

import pytest

from tests.support.processes import free_port, python_module
from tests.support.stack import start_internal_service

NEVER_RUNNING_PORT = free_port()  # a "later" service that is not running


@pytest.fixture(scope="session")
def health(stack):
    targets = {
        "gateway": f"{stack.gateway_url}/readyz",
        "ai_service": f"{stack.ai_service_url}/readyz",
        "llm_server": f"{stack.control_url}/readyz",
        "vllm": f"{stack.vllm_url}/health",
        "graphrag": f"{stack.graphrag_url}/readyz",
        "writing": f"http://127.0.0.1:{NEVER_RUNNING_PORT}/readyz",
    }
    env = {"HEALTH_TARGETS": ",".join(f"{name}={url}" for name, url in targets.items()),
           "HEALTH_OPTIONAL_TARGETS": "writing", "HEALTH_INTERVAL_SEC": "1", "HEALTH_CHECK_TIMEOUT_SEC": "3",
           "HEALTH_HISTORY_SIZE": "20", "HEALTH_REDIS_PREFIX": "health:test:"}
    start_internal_service(stack.platform, "health", python_module("services.health"), stack.session_dir,
                           extra_env=env, timeout=60)
    return stack.platform.internal["health"]
