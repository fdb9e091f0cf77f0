"""The practice service, started once per test session on the port ai_service already points at."""

from __future__ import annotations

import pytest

from tests.support.processes import python_module
from tests.support.stack import start_internal_service

PRACTICE_ENV = {
    "PRACTICE_ENGINE": "ab",  # sticky A/B split; tests pick an engine per request where they need one
    "PRACTICE_AB_LLM_SHARE": "0.5",
    "PRACTICE_LLM_BUDGET_SEC": "40",  # 2 shared cores: generous, the fallback test kills vLLM instead
    "PRACTICE_ENGINE_OVERRIDE_KEY": "practice:test:engine_override",
    # the base model: the sample `peer` adapter keeps the persona far less often (7% against 27%,
    # bench/results/practice_peer.md and practice.md); the adapter choice itself is unit-tested
    "PRACTICE_LLM_ADAPTER": "",
}


@pytest.fixture(scope="session")
def practice(stack):
    start_internal_service(stack.platform, "practice", python_module("services.practice"), stack.session_dir,
                           extra_env=PRACTICE_ENV, timeout=180)
    return stack.platform.internal["practice"]
