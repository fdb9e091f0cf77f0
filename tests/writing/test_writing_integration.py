"""The writing service through the real gateway -> ai_service -> writing, with real Redis and vLLM."""

from __future__ import annotations

import json
import uuid

import httpx
import jsonschema
import pytest
import redis

from services.writing.schemas import AnalyzeResponse
from tests.writing.samples import CHINESE, ENGLISH, TRICKY

pytestmark = pytest.mark.integration

SCHEMA = AnalyzeResponse.model_json_schema()


def analyze(stack, key: str | None = None, **body) -> httpx.Response:
    body.setdefault("writing_type", "essay")
    body.setdefault("student_profile", {"level": "high_school", "lang": ""})
    return httpx.post(f"{stack.gateway_url}/v1/writing/analyze", json=body, timeout=120,
                      headers={"authorization": f"Bearer {key or stack.api_key}"})


def check_spans(result: dict, content: str) -> int:
    checked = 0
    for issue in result["issues"]:
        start, end = issue["span"]
        assert 0 <= start < end <= len(content)
        assert content[start:end] == issue["quote"], issue
        s16, e16 = issue["span_utf16"]
        assert content.encode("utf-16-le")[2 * s16:2 * e16].decode("utf-16-le") == issue["quote"]
        checked += 1
    for score in result["scores"]:
        for ev in score["evidence"]:
            assert content[ev["span"][0]:ev["span"][1]] == ev["quote"], ev
            checked += 1
    return checked


@pytest.mark.parametrize("content,lang", [(ENGLISH, "en"), (CHINESE, "zh"), (TRICKY, None)])
def test_analysis_validates_and_spans_are_exact(stack, writing, content, lang):
    response = analyze(stack, content=content, writing_type="argumentative")
    assert response.status_code == 200, response.text
    result = response.json()
    jsonschema.validate(result, SCHEMA)
    assert check_spans(result, content) > 0
    criteria = {s["criterion"] for s in result["scores"]}
    assert {"ideas", "organization", "evidence", "style", "language", "conventions"} <= criteria
    for s in result["scores"]:
        assert s["scale"]["min"] <= s["score"] <= s["scale"]["max"] and s["rationale"]
    assert result["model"]["scorer"].startswith("asap-")
    assert 1 <= len(result["feedback"]["priorities"]) <= 3
    if result["degraded"]:
        assert result["degraded_reason"]
    else:
        assert result["model"]["llm"]
    metrics = result["metrics"]
    if lang == "zh":
        assert result["language"] == "zh" and metrics["unit"] == "characters"
        assert metrics["characters"] > 80 and metrics["words"] > 40 and metrics["sentences"] == 7
        assert any(ch >= "\u4e00" for ch in result["feedback"]["summary"])  # feedback in Chinese
        assert any(i["type"] == "punctuation" and i["quote"] == "," for i in result["issues"])
    elif lang == "en":
        assert metrics["words"] > 100 and metrics["paragraphs"] == 3
        quotes = {i["quote"] for i in result["issues"]}
        assert {"responsability", "a important", "that that"} <= quotes
    else:
        quotes = {i["quote"] for i in result["issues"]}
        assert {"studys", "the the"} <= quotes and not any(q.startswith("cafe") for q in quotes)
        assert any(i["span"] != i["span_utf16"] for i in result["issues"])  # after an emoji the offsets differ


def test_profile_written_only_with_user_id(stack, writing):
    r = redis.Redis.from_url(stack.platform.redis_url, decode_responses=True)
    user = f"learner-{uuid.uuid4().hex[:8]}"
    key = f"learner:default:{user}"
    response = analyze(stack, content=ENGLISH)
    assert response.status_code == 200 and response.json()["profile_updated"] is False
    assert r.get(key) is None
    response = analyze(stack, content=ENGLISH, user_id=user)
    assert response.status_code == 200, response.text
    assert response.json()["profile_updated"] is True
    profile = json.loads(r.get(key))
    assert profile["user_id"] == user and profile["schema_version"] == 1
    points = profile["weak_points"]
    assert 2 <= len(points) <= 3
    for point in points:
        assert point["source"] == "writing" and point["at"].endswith("Z") and point["skill"]
        for ev in point["evidence"]:
            assert ENGLISH[ev["span"][0]:ev["span"][1]] == ev["quote"]
    weakest = sorted(response.json()["scores"], key=lambda s: s["normalized"])[0]["normalized"]
    assert min(p["normalized"] for p in points) == weakest
    # A student key cannot write another learner's profile.
    student = stack.key_for("writing-student", role="student", user_id=f"s-{uuid.uuid4().hex[:6]}")
    response = analyze(stack, student, content=ENGLISH, user_id=user)
    assert response.status_code == 403
    # Bad input stores nothing, even with a user_id.
    other = f"learner-{uuid.uuid4().hex[:8]}"
    assert analyze(stack, content="   ", user_id=other).status_code == 400
    assert r.get(f"learner:default:{other}") is None


def test_custom_rubric_overrides_builtin(stack, writing):
    rubric = {"name": "proposal", "scale": {"min": 0, "max": 10, "step": 0.5}, "criteria": [
        {"id": "research_question", "name": "Research question", "description": "A clear, focused question"},
        {"id": "sources", "name": "Use of sources", "description": "Cites relevant literature"},
        {"id": "mechanics", "name": "Mechanics", "description": "Spelling and punctuation",
         "scale": {"min": 1, "max": 4}},
    ]}
    response = analyze(stack, content=ENGLISH, writing_type="research_proposal", rubric=rubric)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [s["criterion"] for s in result["scores"]] == ["research_question", "sources", "mechanics"]
    assert result["scores"][0]["anchored_on"] == ["ideas"]
    assert result["scores"][1]["anchored_on"] == ["holistic", "ideas"]
    assert result["scores"][2]["anchored_on"] == ["conventions"] and result["scores"][2]["scale"] == {"min": 1, "max": 4}
    assert result["overall"]["scale"] == {"min": 0, "max": 10}
    assert (result["scores"][0]["score"] * 2) == int(result["scores"][0]["score"] * 2)


@pytest.mark.parametrize("body,status,code", [
    ({"content": ""}, 400, "empty_content"),
    ({"content": " \n\t "}, 400, "empty_content"),
    ({"content": "word " * 9000}, 413, "content_too_large"),
    ({"content": "PK\x03\x04\x00\x00binary"}, 400, "binary_content"),
    ({"content": "An essay.", "writing_type": "poem"}, 400, "invalid_writing_type"),
    ({"content": "An essay.", "rubric": {"criteria": [{"id": "x", "scale": {"min": 5, "max": 1}}]}}, 422,
     "invalid_rubric"),
    ({"content": "An essay.", "rubric": {"criteria": "all"}}, 422, "invalid_rubric"),
])
def test_bad_input(stack, writing, body, status, code):
    response = analyze(stack, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if code == "invalid_writing_type":
        assert "argumentative" in error["message"] and "research_proposal" in error["message"]
    if code == "invalid_rubric":
        assert "rubric" in error["message"]


def test_undecodable_body(stack, writing):
    response = httpx.post(f"{stack.gateway_url}/v1/writing/analyze", timeout=60,
                          content=b'{"writing_type": "essay", "content": "caf\xe9 \xff\xfe"}',
                          headers={"authorization": f"Bearer {stack.api_key}", "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_encoding", "invalid_json")


def test_assignment_calibration_statistics(stack, writing):
    """Per-assignment calibration: earlier essays' feature statistics (seeded here as if 12 essays had been analysed)
    calibrate the score; each new text is counted once; without an assignment nothing is stored."""
    from services.writing.analysis import assignment_key
    from services.writing.schemas import AnalyzeRequest
    from services.writing.scorer import FEATURES, Scorer

    r = redis.Redis.from_url(stack.platform.redis_url, decode_responses=True)
    scorer = Scorer()
    sentences = [s.strip() + "." for s in ENGLISH.replace("\n", " ").split(".") if s.strip()]
    aid = f"essay-{uuid.uuid4().hex[:8]}"
    key = f"writing:assignment:default:{aid}"
    seed = {"n": 12}
    for i in range(12):
        x = scorer.features(" ".join(sentences[i % len(sentences):][: 2 + i % 4]))
        for j in range(len(FEATURES)):
            seed[f"s{j}"] = seed.get(f"s{j}", 0.0) + float(x[j])
            seed[f"q{j}"] = seed.get(f"q{j}", 0.0) + float(x[j]) ** 2
    r.hset(key, mapping=seed)
    for expected_seen in (12, 13):  # the second, identical text is not counted again
        response = analyze(stack, content=ENGLISH, assignment_id=aid)
        assert response.status_code == 200, response.text
        model = response.json()["model"]
        assert model["calibration"] == "assignment" and model["assignment_essays"] == 12 + (expected_seen > 12)
        assert int(r.hget(key, "n")) == 13
    # The prompt text identifies the assignment when no assignment_id is given; a first essay is scored cold.
    prompt = f"Write a letter to your local newspaper about homework ({uuid.uuid4().hex[:6]})."
    response = analyze(stack, content=ENGLISH, prompt=prompt)
    assert response.status_code == 200 and response.json()["model"]["calibration"] == "absolute"
    pkey = "writing:assignment:" + assignment_key(AnalyzeRequest(writing_type="essay", content="x", prompt=prompt))
    assert int(r.hget(pkey, "n")) == 1 and r.ttl(pkey) > 0
    assert analyze(stack, content="   ", assignment_id=aid).status_code == 400
    assert int(r.hget(key, "n")) == 13
