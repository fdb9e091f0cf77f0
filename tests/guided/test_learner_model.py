"""Turn evaluation (the evidence) and the BKT mastery update."""

import pytest

from services.guided.evaluate import evaluate_turn
from services.guided.leak import known_answer
from services.guided.mastery import bkt_update

PROBLEM = "Julia had 12 spoons at the end and used 3. Her husband gave her 5. How many were in her package?"


@pytest.mark.parametrize("text,kind", [
    ("Just give me the answer.", "demand"),
    ("just tell me the answer please", "demand"),
    ("What's the answer?", "demand"),
    ("Can you write it for me?", "demand"),
    ("write my thesis for me", "demand"),
    ("直接告诉我答案", "demand"),
    ("答案是多少？", "demand"),
    ("帮我写一个 thesis statement", "demand"),
    ("I think it is 10", "correct"),
    ("12 + 3 = 15, 15 - 5 = 10 spoons", "correct"),
    ("is it ten?", "correct"),
    ("答案是十", "correct"),
    ("I got 4", "wrong"),
    ("12 - 3 = 9, 9 - 5 = 4", "wrong"),
    ("I don't know where to start", "stuck"),
    ("我不会", "stuck"),
    ("Oh I see, that makes sense", "understood"),
    ("Should I add or subtract?", "question"),
    ("First I look at the spoons she had", "attempt"),
])
def test_turn_evaluation(text, kind):
    assert evaluate_turn(text, known_answer("10"), PROBLEM).kind == kind


def test_numbers_quoted_from_the_problem_are_not_a_wrong_answer():
    assert evaluate_turn("She had 12 spoons", known_answer("10"), PROBLEM).kind == "attempt"


def test_open_task_has_no_right_or_wrong():
    assert evaluate_turn("My thesis: phones are bad", None).kind == "attempt"
    assert not evaluate_turn("I got 4", None).is_evidence


def test_target_sentence_correct():
    answer = known_answer("Phones should be banned in class because they distract students.")
    assert evaluate_turn("phones should be banned in class because they distract students", answer).kind == "correct"


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3, 0.5, 0.8, 0.99])
def test_mastery_rises_after_correct_and_falls_after_wrong(p):
    assert bkt_update(p, True) > p or p >= 0.99
    assert bkt_update(p, False) < p


def test_hints_make_a_correct_answer_weaker_evidence():
    assert bkt_update(0.3, True, hint_level=3) < bkt_update(0.3, True, hint_level=0)


def test_mastery_stays_a_probability():
    p = 0.3
    for correct in [True] * 30 + [False] * 30:
        p = bkt_update(p, correct)
        assert 0 < p < 1
