"""The feedback service, started once per test session on the port ai_service already points at, with the
test stack's llm_server (adapters) and its own SQLite store in the session directory."""

from __future__ import annotations

import pytest

from tests.support.processes import python_module
from tests.support.stack import LLM_SERVER_TOKEN, start_internal_service
from tests.training.conftest import base_model  # noqa: F401  (the embedded model for the loop test)


@pytest.fixture(scope="session")
def feedback(stack):
    env = {"FEEDBACK_DB_PATH": str(stack.session_dir / "feedback" / "feedback.db"),
           "LLM_SERVER_URL": stack.control_url, "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN,
           "LLM_ADAPTERS_DIR": str(stack.adapters_dir), "FEEDBACK_ARENA_MAX_TOKENS": "12"}
    start_internal_service(stack.platform, "feedback", python_module("services.feedback"), stack.session_dir,
                           extra_env=env, timeout=60)
    svc = stack.platform.internal["feedback"]
    svc.db_path = env["FEEDBACK_DB_PATH"]
    return svc
