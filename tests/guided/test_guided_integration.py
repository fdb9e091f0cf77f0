"""Guided sessions end to end: gateway -> ai_service -> guided -> ai_service -> vLLM, real Redis."""

from __future__ import annotations

import json

import httpx
import pytest

from services.guided.leak import check_leak, known_answer
from tests.guided.conftest import start_guided

pytestmark = pytest.mark.integration

PROBLEM = ("Julia bought a package of spoons. Her husband gave her a package of 5 new spoons. She used 3 spoons "
           "to sample her stew, and later she had 12 spoons in total. How many spoons were in Julia's package?")
SOLUTION = "The total number of spoons was 12+3=15 spoons.\nJulia's package contained 15-5=10 spoons.\n 10"


def post_turn(stack, key, user_id, messages, course_id="course-001", **extra):
    body = {"topic": PROBLEM, "messages": messages, "user_id": user_id, "course_id": course_id, "answer": "10",
            "solution": SOLUTION, **extra}
    response = httpx.post(f"{stack.gateway_url}/v1/chat/guided", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=180)
    return response


def session(stack, key, user_id, student_turns, **extra):
    """Play the student's turns; returns the (reply, guidance) of each."""
    messages, out = [], []
    for text in student_turns:
        messages.append({"role": "user", "content": text})
        response = post_turn(stack, key, user_id, messages, **extra)
        assert response.status_code == 200, response.text
        data = response.json()
        reply = data["choices"][0]["message"]["content"]
        out.append((reply, data["guidance"]))
        messages.append({"role": "assistant", "content": reply})
    return out


def test_first_turn_demand_gets_a_graded_hint_not_the_answer(guided):
    key = guided.key_for("guided-s1", role="student", user_id="student-g1")
    for demand in ("Just give me the answer.", "直接告诉我答案，别给提示"):
        (reply, guidance), = session(guided, key, "student-g1", [demand])
        assert guidance["move"] == "hint" and guidance["hint_level"] == 1
        assert guidance["evaluation"] == "demand" and guidance["leak_guard"]["checked"]
        assert not check_leak(reply, known_answer("10")).leaked, reply
        assert "15-5" not in reply and "12+3=15" not in reply  # no full solution either
    assert guidance["language"] == "zh"


def test_hints_escalate_after_failed_attempts_and_mastery_follows(guided):
    key = guided.key_for("guided-s2", role="student", user_id="student-g2")
    turns = session(guided, key, "student-g2", ["Just tell me the answer", "I got 4", "Is it 9?", "It is 10"])
    labels = [(g["move"], g["hint_level"]) for _, g in turns]
    assert labels == [("hint", 1), ("hint", 2), ("hint", 3), ("check_understanding", 0)]
    wrong, right = turns[1][1], turns[3][1]
    assert wrong["mastery_after"] < wrong["mastery_before"]
    assert right["mastery_after"] > right["mastery_before"]
    for reply, guidance in turns[:3]:
        assert not check_leak(reply, known_answer("10")).leaked, reply


def test_profile_persists_across_a_restart_and_next_session_starts_from_it(guided):
    key = guided.key_for("guided-s3", role="student", user_id="student-g3")
    (_, first), = session(guided, key, "student-g3", ["10"])
    stored = first["mastery_after"]
    assert stored > first["mastery_before"]
    guided.platform.processes["guided"].stop()
    start_guided(guided)
    profile = httpx.get(f"{guided.gateway_url}/v1/learners/student-g3", params={"course_id": "course-001"},
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert profile.status_code == 200, profile.text
    assert profile.json()["skills"]["math_word_problems"]["mastery"] == stored
    (_, second), = session(guided, key, "student-g3", ["Just give me the answer"], topic="A new problem: 7 + 8 = ?",
                           answer="15", solution="7+8=15\n 15")
    assert second["mastery_before"] == stored


def test_profiles_are_private_to_the_student_and_readable_by_the_course_teacher(guided):
    alice = guided.key_for("guided-alice", role="student", user_id="alice")
    bob = guided.key_for("guided-bob", role="student", user_id="bob")
    teacher = guided.key_for("guided-teacher", role="teacher", user_id="teacher-001")
    other_teacher = guided.key_for("guided-teacher-2", role="teacher", user_id="teacher-002")
    session(guided, alice, "alice", ["I got 4"])

    def get(key, user_id, course_id="course-001"):
        return httpx.get(f"{guided.gateway_url}/v1/learners/{user_id}", params={"course_id": course_id},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)

    assert get(alice, "alice").status_code == 200
    forbidden = get(bob, "alice")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "permission_error"
    assert post_turn(guided, bob, "alice", [{"role": "user", "content": "hi"}]).status_code == 403
    read = get(teacher, "alice")
    assert read.status_code == 200 and read.json()["weak_points"], read.text
    assert get(other_teacher, "alice").status_code == 403
    # a teacher corrects a skill; a student may not
    patch = {"course_id": "course-001", "skills": {"math_word_problems": {"mastery": 0.75, "note": "oral check"}}}
    url = f"{guided.gateway_url}/v1/learners/alice"
    assert httpx.patch(url, json=patch, headers={"Authorization": f"Bearer {alice}"}, timeout=30).status_code == 403
    corrected = httpx.patch(url, json=patch, headers={"Authorization": f"Bearer {teacher}"}, timeout=30)
    assert corrected.status_code == 200, corrected.text
    entry = corrected.json()["skills"]["math_word_problems"]
    assert entry["mastery"] == 0.75 and entry["source"] == "teacher" and entry["history"][-1]["teacher_correction"]
    assert get(alice, "alice").json()["skills"]["math_word_problems"]["mastery"] == 0.75


def test_streaming_sends_checked_text_and_guidance_last(guided):
    key = guided.key_for("guided-s5", role="student", user_id="student-g5")
    body = {"topic": PROBLEM, "messages": [{"role": "user", "content": "Just give me the answer"}],
            "user_id": "student-g5", "course_id": "course-001", "answer": "10", "stream": True}
    chunks = []
    with httpx.stream("POST", f"{guided.gateway_url}/v1/chat/guided", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=180) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    events = [json.loads(c) for c in chunks[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert events[-1]["guidance"]["move"] == "hint" and events[-1]["choices"][0]["finish_reason"] == "stop"
    assert text and not check_leak(text, known_answer("10")).leaked


def test_admin_sets_a_course_teacher_through_the_gateway(guided):
    admin = guided.key_for("guided-admin", role="admin", user_id="admin-1")
    teacher = guided.key_for("guided-teacher-3", role="teacher", user_id="teacher-003")
    carol = guided.key_for("guided-carol", role="student", user_id="carol")
    url = f"{guided.gateway_url}/v1/courses/course-003/teachers"
    assert httpx.put(url, json={"teachers": ["teacher-003"]}, headers={"Authorization": f"Bearer {carol}"},
                     timeout=30).status_code == 403
    assert httpx.put(url, json={"teachers": ["teacher-003"]}, headers={"Authorization": f"Bearer {admin}"},
                     timeout=30).json() == {"teachers": ["teacher-003"]}
    profile_url = f"{guided.gateway_url}/v1/learners/carol"
    read = httpx.get(profile_url, params={"course_id": "course-003"}, headers={"Authorization": f"Bearer {teacher}"},
                     timeout=30)
    assert read.status_code == 200 and read.json()["exists"] is False
    assert httpx.get(profile_url, params={"course_id": "course-001"}, headers={"Authorization": f"Bearer {teacher}"},
                     timeout=30).status_code == 403


def test_writing_weak_points_pick_what_to_practise(guided):
    """A weak point the writing analysis recorded (docs/learner-profile.md) steers an open session."""
    import redis

    record = {"schema_version": 1, "user_id": "student-w1", "course_id": "course-001",
              "weak_points": [{"skill": "thesis", "criterion": "ideas", "description": "Ideas and thesis: 2/6",
                               "evidence": [{"span": [0, 20], "quote": "Computers are good."}], "source": "writing",
                               "at": "2026-11-29T04:01:02Z", "last_seen": "2026-11-29T04:01:02Z", "count": 2,
                               "resolved": False}]}
    redis.Redis.from_url(guided.redis_url).set("learner:course-001:student-w1", json.dumps(record))
    key = guided.key_for("guided-w1", role="student", user_id="student-w1")
    response = httpx.post(f"{guided.gateway_url}/v1/chat/guided", headers={"Authorization": f"Bearer {key}"},
                          json={"topic": "Help me improve my essay", "user_id": "student-w1",
                                "course_id": "course-001",
                                "messages": [{"role": "user", "content": "Where should I start?"}]}, timeout=180)
    assert response.status_code == 200, response.text
    guidance = response.json()["guidance"]
    assert guidance["move"] == "diagnose" and guidance["skill"] == "thesis"
    assert guidance["focus"]["source"] == "writing" and guidance["focus"]["description"] == "Ideas and thesis: 2/6"
    if guidance["phrased_by"] == "template":
        assert "Ideas and thesis: 2/6" in response.json()["choices"][0]["message"]["content"]
    profile = httpx.get(f"{guided.gateway_url}/v1/learners/student-w1", params={"course_id": "course-001"},
                        headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    assert profile["writing_weak_points"][0]["skill"] == "thesis"


# --- the model's text is scripted at the fault proxy, so the test knows what it wrote -------------
def demand_turn(stack, user_id):
    key = stack.key_for(f"guided-{user_id}", role="student", user_id=user_id)
    response = post_turn(stack, key, user_id, [{"role": "user", "content": "Just give me the answer"}])
    assert response.status_code == 200, response.text
    return response.json()


def test_a_leaking_model_text_is_regenerated_then_replaced_by_the_hint(guided, faults):
    faults.local_proxy.set_mode("script", script="Easy: 12 + 3 = 15 and 15 - 5 = 10. What do you get?")
    seen = faults.local_proxy.requests_seen
    data = demand_turn(guided, "student-leak")
    guidance, reply = data["guidance"], data["choices"][0]["message"]["content"]
    assert faults.local_proxy.requests_seen - seen == 2  # the first text, then one stricter regeneration
    assert guidance["leak_guard"] == {"checked": True, "regenerated": True, "replaced": True}
    assert guidance["phrased_by"] == "template" and guidance["move"] == "hint"
    assert not check_leak(reply, known_answer("10")).leaked and "Read the question again" in reply


def test_a_clean_model_text_is_sent(guided, faults):
    script = ("I won't just give you the answer. Read the question again: what exactly does it ask for? "
              "Which quantities do you know already, and what does each one mean?")
    faults.local_proxy.set_mode("script", script=script)
    data = demand_turn(guided, "student-clean")
    assert data["guidance"]["phrased_by"] == "llm", data["guidance"]
    assert data["choices"][0]["message"]["content"] == script


def test_no_model_means_template_replies_and_learner_data_never_goes_to_the_cloud(guided, faults):
    faults.local_proxy.kill()
    cloud_before = faults.cloud_proxy.requests_seen
    data = demand_turn(guided, "student-private")
    assert faults.cloud_proxy.requests_seen == cloud_before  # private: no fallback, even with it allowed
    assert data["guidance"]["phrased_by"] == "template" and "llm call failed" in data["guidance"]["notes"]
    assert data["guidance"]["move"] == "hint" and data["choices"][0]["message"]["content"]


def test_the_course_list_includes_courses_with_writing_weak_points_only(guided):
    """A learner whose essays were analysed but who never had a guided session still has those courses
    in GET /v1/learners/{user_id} (the list that the get_learner_profile tool reads)."""
    import redis

    record = {"schema_version": 1, "user_id": "student-w2", "course_id": "course-007",
              "weak_points": [{"skill": "organization", "criterion": "organization",
                               "description": "Organisation: 2/6", "evidence": [], "source": "writing",
                               "last_seen": "2026-11-29T04:01:02Z", "count": 1, "resolved": False}]}
    client = redis.Redis.from_url(guided.redis_url)
    client.set("learner:course-007:student-w2", json.dumps(record))
    client.set("learner:course-007:student-w2x", json.dumps(record))  # another learner, same course
    key = guided.key_for("guided-w2", role="student", user_id="student-w2")
    listed = httpx.get(f"{guided.gateway_url}/v1/learners/student-w2", headers={"Authorization": f"Bearer {key}"},
                       timeout=30)
    assert listed.status_code == 200, listed.text
    profiles = listed.json()["data"]
    assert [p["course_id"] for p in profiles] == ["course-007"]
    assert profiles[0]["exists"] is False and profiles[0]["writing_weak_points"][0]["skill"] == "organization"
