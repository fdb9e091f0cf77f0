"""The writing service, started once per test session on the port ai_service already points at."""

from __future__ import annotations

import pytest

from tests.support.processes import python_module
from tests.support.stack import start_internal_service

WRITING_ENV = {
    "WRITING_PROFILE_KEY": "learner:{course_id}:{user_id}",
    # 2 shared cores under a test run: a generous budget so the LLM part usually finishes; latency is benched.
    "WRITING_LLM_BUDGET_SEC": "20",
}


@pytest.fixture(scope="session")
def writing(stack):
    start_internal_service(stack.platform, "writing", python_module("services.writing"), stack.session_dir,
                           extra_env=WRITING_ENV, timeout=180)
    return stack.platform.internal["writing"]
