"""The tutoring policy's decision table, row by row, and whole scripted sessions."""

import pytest

from services.guided.evaluate import Evaluation
from services.guided.policy import MAX_HINT_LEVEL, SessionState, advance, decide


def ev(kind):
    return Evaluation(kind)


def run(kinds, has_answer=True, state=None):
    state = state or SessionState()
    labels = []
    for kind in kinds:
        decision = decide(state, ev(kind), has_known_answer=has_answer)
        state = advance(state, ev(kind), decision)
        labels.append(decision.label)
    return labels, state


@pytest.mark.parametrize("kind,expected", [
    ("demand", "hint_1"),  # a first-turn demand gets a graded hint, never the answer
    ("correct", "check_understanding"),
    ("wrong", "diagnose"),
    ("stuck", "diagnose"),
    ("question", "diagnose"),
    ("attempt", "diagnose"),
    ("understood", "check_understanding"),
])
def test_first_turn(kind, expected):
    assert decide(SessionState(), ev(kind), has_known_answer=True).label == expected


def test_repeated_demands_escalate_then_worked_example_then_strongest_hint():
    labels, state = run(["demand"] * 6)
    assert labels == ["hint_1", "hint_2", "hint_3", "worked_example", "hint_3", "hint_3"]
    assert state.demands == 6 and state.example_given and not state.solved


def test_failed_attempts_escalate_hints():
    labels, state = run(["attempt", "wrong", "wrong", "wrong", "wrong", "wrong"])
    assert labels == ["diagnose", "hint_1", "hint_2", "hint_3", "worked_example", "hint_3"]
    assert state.failed_attempts == 5 and state.hint_level == MAX_HINT_LEVEL


def test_stuck_counts_as_a_failed_attempt():
    labels, _ = run(["question", "stuck", "stuck"])
    assert labels == ["diagnose", "hint_1", "hint_2"]


def test_wrong_then_right_session():
    labels, state = run(["demand", "wrong", "wrong", "correct", "attempt"])
    assert labels == ["hint_1", "hint_2", "hint_3", "check_understanding", "summarise"]
    assert state.solved and state.checked


def test_questions_get_asks_but_no_ask_loop():
    labels, _ = run(["attempt", "question", "question", "question"])
    assert labels == ["diagnose", "ask", "hint_1", "ask"]


def test_open_task_without_answer_reaches_check_and_summary():
    labels, _ = run(["stuck", "attempt", "attempt", "attempt", "understood"], has_answer=False)
    assert labels == ["diagnose", "ask", "hint_1", "check_understanding", "summarise"]


def test_understood_after_worked_example_summarises():
    labels, _ = run(["demand", "demand", "demand", "demand", "understood"])
    assert labels[-2:] == ["worked_example", "summarise"]


def test_after_solving_everything_summarises():
    _, state = run(["correct"])
    for kind in ("wrong", "demand", "question", "correct"):
        assert decide(state, ev(kind), has_known_answer=True).move == "summarise"


def test_hint_level_never_exceeds_three():
    _, state = run(["demand"] * 10)
    assert state.hint_level == 3


def test_state_round_trips_through_json():
    _, state = run(["demand", "wrong"])
    assert SessionState.from_dict(state.to_dict()) == state
    assert SessionState.from_dict(None) == SessionState()
