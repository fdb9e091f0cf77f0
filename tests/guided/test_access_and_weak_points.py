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


def test_the_shared_schema_of_docs_learner_profile():
    """The example record of docs/learner-profile.md, as the writing service writes it."""
    from services.guided.tutor import focus_text

    record = {"schema_version": 1, "user_id": "s-42", "course_id": "default", "updated_at": "2026-11-29T04:01:02Z",
              "weak_points": [
                  {"skill": "thesis", "criterion": "ideas", "description": "Ideas and thesis: 2/6", "score": 2.0,
                   "scale": {"min": 1, "max": 6}, "normalized": 0.2,
                   "evidence": [{"span": [0, 57], "quote": "Computers are good and bad and I will talk about them."}],
                   "writing_type": "argumentative", "analysis_id": "wa-1", "source": "writing",
                   "at": "2026-11-29T04:01:02Z", "first_seen": "2026-11-20T10:00:00Z",
                   "last_seen": "2026-11-29T04:01:02Z", "count": 3, "resolved": False},
                  {"skill": "grammar", "criterion": "conventions", "description": "Conventions: 4/6", "count": 1,
                   "last_seen": "2026-11-29T04:01:02Z", "resolved": True}],
              "history": []}
    points = normalise(record)
    assert len(points) == 1 and points[0]["skill"] == "thesis" and points[0]["count"] == 3
    focus = pick_focus("thesis", [], points)
    assert focus_text(focus) == "Ideas and thesis: 2/6 (e.g. “Computers are good and bad and I will talk about them.”)"
