"""Template replies: every move in both languages, hints from solution steps that never carry the answer,
and the phrasing checks that decide whether the model's words may replace a template."""

import json
from pathlib import Path

import pytest

from services.guided.leak import check_leak, known_answer
from services.guided.numbers import parse_answer
from services.guided.phrasing import quality_problems, trim_to_sentence
from services.guided.policy import MOVES
from services.guided.templates import MoveContext, solution_steps, template_reply

SOLUTION = "The total number of spoons was 12+3=15 spoons.\nSince the husband bought 5, Julia's package had 15-5=10 spoons.\n 10"
MATHDIAL = Path("../shared/data/mathdial/test.jsonl")


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("move", MOVES)
def test_every_move_has_a_reply(move, language):
    ctx = MoveContext(move=move, hint_level=2 if move == "hint" else 0, language=language, skill="thesis",
                      mastery=0.4, weak_point="thesis too vague")
    text = template_reply(ctx)
    assert len(text) > 20
    assert ("?" in text or "？" in text) or move == "summarise"


def test_step_hints_escalate_without_the_answer():
    answer = known_answer("10")
    texts = [template_reply(MoveContext("hint", level, "en", "math_word_problems", True, SOLUTION, answer))
             for level in (1, 2, 3)]
    assert "12+3" not in texts[0] and "12+3 = ?" in texts[1] and "15-5 = ?" in texts[2]
    assert texts[0].startswith("I won't just give you the answer")
    assert not any(check_leak(t, answer).leaked for t in texts)


def test_worked_example_is_a_different_problem_without_the_answer():
    for value in ("33", "30", "21", "42"):  # each excludes a bank example that contains it
        text = template_reply(MoveContext("worked_example", 0, "en", "math_word_problems",
                                          answer=known_answer(value)))
        assert not check_leak(text, known_answer(value)).leaked


@pytest.mark.skipif(not MATHDIAL.exists(), reason="needs ../shared/data/mathdial")
def test_guarded_templates_never_leak_on_mathdial():
    from services.guided.tutor import _safe_template

    rows = [json.loads(line) for line in MATHDIAL.read_text().splitlines()]
    fallbacks = 0
    for row in rows:
        answer = known_answer(str(parse_answer(row["ground_truth"])))
        for move in ("diagnose", "ask", "hint", "worked_example"):
            for level in (1, 2, 3):
                for language in ("en", "zh"):
                    ctx = MoveContext(move, level, language, "math_word_problems", True, row["ground_truth"], answer)
                    text = _safe_template(ctx, answer, True)
                    assert not check_leak(text, answer).leaked, (row["qid"], move, level, text)
                    fallbacks += text != template_reply(ctx)
    assert fallbacks < len(rows) * 24 * 0.05  # the step hints are usable for nearly every problem


def test_solution_steps_drop_the_bare_answer_line():
    assert solution_steps(SOLUTION) == ["The total number of spoons was 12+3=15 spoons.",
                                        "Since the husband bought 5, Julia's package had 15-5=10 spoons."]


def test_phrasing_checks():
    hint = MoveContext("hint", 1, "en", "thesis")
    assert quality_problems("What is the one claim you want your reader to accept?", hint) == []
    assert "asks no question" in quality_problems("A thesis is a claim. It should be clear.", hint)
    assert "not in Chinese" in quality_problems("What is your claim?", MoveContext("hint", 1, "zh", "thesis"))
    assert "echoes the prompt" in quality_problems("Tutor's message to rephrase: what is it?", hint)
    template = "Read the question again: what exactly does it ask for? List the quantities you know."
    assert quality_problems("Read it again: what does the question ask for? Which quantities do you know?",
                            hint, template) == []
    assert "talks about giving the answer" in quality_problems(
        "I'll give you the answer, but first: what does the question ask for?", hint, template)
    assert "repeats itself" in quality_problems(
        "What's the question? What's the answer? What's the question? What's the answer?", hint)
    assert "drops the move's content" in quality_problems("I'm glad you're here! What's on your mind today?",
                                                          hint, template)
    assert trim_to_sentence("One idea. Another idea? And then the model got cut") == "One idea. Another idea?"
