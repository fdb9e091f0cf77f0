"""Who may read and correct learner profiles; reading the writing analysis' weak points."""

import pytest

from common.auth import Caller
from services.guided.access import can_correct_profile, can_read_profile, can_run_session
from services.guided.weak_points import normalise, pick_focus

TEACHERS = {"teacher-001"}


def caller(role, user_id):
    return Caller("k", "private", user_id, role)


@pytest.mark.parametrize("who,target,readable,correctable", [
    (caller("student", "alice"), "alice", True, False),
    (caller("student", "bob"), "alice", False, False),
    (caller("student", None), "alice", False, False),
    (caller("teacher", "teacher-001"), "alice", True, True),
    (caller("teacher", "teacher-002"), "alice", False, False),
    (caller("teacher", None), "alice", False, False),
    (caller("admin", None), "alice", True, True),
])
def test_access_table(who, target, readable, correctable):
    assert can_read_profile(who, target, TEACHERS) is readable
    assert can_run_session(who, target, TEACHERS) is readable
    assert can_correct_profile(who, TEACHERS) is correctable


def test_a_student_listed_as_teacher_is_still_a_student():
    assert not can_read_profile(caller("student", "teacher-001"), "alice", TEACHERS)


def test_weak_points_in_any_shape():
    record = {"weak_points": [
        {"skill": "thesis", "description": "thesis too vague", "evidence": ["Social media is big."], "count": 3,
         "last_seen": "2026-11-28T10:00:00Z"},
        {"dimension": "grammar", "label": "subject-verb agreement", "count": 1},
        {"description": "论据不足，缺少具体例子", "resolved": True},
    ]}
    points = normalise(record)
    assert [p["skill"] for p in points] == ["thesis", "grammar"]
    assert points[0]["evidence"] == ["Social media is big."] and all(p["source"] == "writing" for p in points)
    assert normalise([{"description": "论据不足，缺少具体例子"}])[0]["skill"] == "evidence"
    assert normalise({"thesis": "too vague"})[0]["skill"] == "thesis"
    assert normalise(None) == [] and normalise("junk") == []


def test_focus_prefers_the_sessions_skill_then_the_most_frequent():
    writing = normalise({"weak_points": [{"skill": "thesis", "description": "vague thesis", "count": 1},
                                         {"skill": "grammar", "description": "tense errors", "count": 5}]})
    assert pick_focus("thesis", [], writing)["description"] == "vague thesis"
    assert pick_focus("evidence", [], writing)["description"] == "tense errors"
    own = [{"skill": "evidence", "description": "no examples", "count": 2, "source": "guided"}]
    assert pick_focus("evidence", own, [])["source"] == "guided"
    assert pick_focus("evidence", [], []) is None
