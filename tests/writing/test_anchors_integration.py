"""Teacher anchors through the real gateway -> ai_service -> writing, with real Redis and vLLM."""

from __future__ import annotations

import uuid

import httpx
import jsonschema
import pytest
import redis

from services.writing.schemas import AnalyzeResponse, AnchorList
from tests.guided.conftest import COURSES, start_guided
from tests.writing.samples import ENGLISH
from tests.writing.test_writing_integration import analyze

pytestmark = pytest.mark.integration

# A continuous 0-100 scale so the anchors' shift shows; the assignment never reaches min_essays (3) essays, so the
# unanchored prediction stays the same cold-start one and the difference is the teacher anchors' offset.
RUBRIC = {"scale": {"min": 0, "max": 100, "step": None}, "criteria": [{"id": "content"}, {"id": "language"}]}


def test_teacher_anchor_raises_later_scores_students_cannot_anchor(stack, writing):
    start_guided(stack)  # course membership (a teacher anchors only the courses they teach)
    course = "course-001"
    r = redis.Redis.from_url(stack.platform.redis_url, decode_responses=True)
    aid = f"anchored-{uuid.uuid4().hex[:8]}"
    key = f"writing:assignment:{course}:{aid}"
    teacher = stack.key_for("writing-teacher", role="teacher", user_id=COURSES[course]["teachers"][0])
    other_teacher = stack.key_for("writing-other-teacher", role="teacher", user_id=COURSES["course-002"]["teachers"][0])
    student_id = f"s-{uuid.uuid4().hex[:6]}"
    student = stack.key_for("writing-anchor-student", role="student", user_id=student_id)
    common = {"assignment_id": aid, "course_id": course, "rubric": RUBRIC}

    before = analyze(stack, student, content=ENGLISH, **common)
    assert before.status_code == 200, before.text
    assert before.json()["model"]["anchors"] == 0
    denied = analyze(stack, student, content=ENGLISH, teacher_score=100, **common)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "teacher_role_required"
    foreign = analyze(stack, other_teacher, content=ENGLISH, teacher_score=100, **common)
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden", foreign.text
    assert r.hget(key, "anchor_m") is None
    anchored = analyze(stack, teacher, content=ENGLISH.replace("homework", "school uniforms"), teacher_score=100,
                       **common)
    assert anchored.status_code == 200, anchored.text
    jsonschema.validate(anchored.json(), AnalyzeResponse.model_json_schema())
    assert anchored.json()["model"]["anchor_recorded"] is True and int(r.hget(key, "anchor_m")) == 1
    after = analyze(stack, student, content=ENGLISH, user_id=student_id, **common)
    assert after.status_code == 200, after.text
    result = after.json()
    assert result["model"]["anchors"] == 1 and result["model"]["anchor_offset"] > 0
    assert result["overall"]["score"] > before.json()["overall"]["score"]
    assert result["profile_updated"] is True  # the rest of the analysis unchanged: the profile is still written
    assert analyze(stack, teacher, content=ENGLISH, rubric=RUBRIC, course_id=course, teacher_score=50).status_code == 422

    # The teacher sees the anchor and removes it (a wrong score, or the wrong assignment); the next essay is back
    # to the unanchored score. Students and teachers of other courses are refused; an unknown id is 404.
    def anchors(method, key, path="", **params):
        return httpx.request(method, f"{stack.gateway_url}/v1/writing/anchors{path}", timeout=30,
                             params={"assignment_id": aid, "course_id": course, **params},
                             headers={"authorization": f"Bearer {key}"})

    listed = anchors("GET", teacher)
    assert listed.status_code == 200, listed.text
    jsonschema.validate(listed.json(), AnchorList.model_json_schema())
    anchor_id = anchored.json()["model"]["anchor_id"]
    assert listed.json()["m"] == 1 and [a["id"] for a in listed.json()["data"]] == [anchor_id]
    assert listed.json()["data"][0]["teacher_score"] == 100
    assert listed.json()["anchor_offset"] == result["model"]["anchor_offset"]
    assert anchors("GET", student).status_code == 403
    assert anchors("DELETE", other_teacher, f"/{anchor_id}").json()["error"]["code"] == "forbidden"
    missing = anchors("DELETE", teacher, "/0123456789abcdef01234567")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "anchor_not_found"
    removed = anchors("DELETE", teacher, f"/{anchor_id}")
    assert removed.status_code == 200 and removed.json()["m"] == 0 and r.hget(key, "anchor_m") is None
    again = analyze(stack, student, content=ENGLISH, **common).json()
    assert again["model"]["anchors"] == 0 and again["model"]["anchor_offset"] == 0.0
    assert again["overall"]["score"] == pytest.approx(before.json()["overall"]["score"], abs=0.11)
