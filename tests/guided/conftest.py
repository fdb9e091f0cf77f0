"""The guided service, started once per test session on the port ai_service already points at,
with a courses file naming the teacher of course-001."""

from __future__ import annotations

import json

import pytest

from tests.support.processes import python_module
from tests.support.stack import start_internal_service

COURSES = {"course-001": {"teachers": ["teacher-001"]}, "course-002": {"teachers": ["teacher-002"]}}


def guided_env(session_dir) -> dict:
    courses = session_dir / "guided-courses.json"
    courses.write_text(json.dumps(COURSES))
    return {"GUIDED_COURSES_FILE": str(courses), "GUIDED_LLM_TIMEOUT_SEC": "60"}


def start_guided(stack):
    return start_internal_service(stack.platform, "guided", python_module("services.guided"), stack.session_dir,
                                  extra_env=guided_env(stack.session_dir))


@pytest.fixture(scope="session")
def guided(stack):
    start_guided(stack)
    return stack
