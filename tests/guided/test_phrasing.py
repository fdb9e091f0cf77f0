"""The guard around the model's phrasing: regenerate once after a leak, then fall back to the template;
a failed call or a poor text never fails the turn. The model is replaced by a scripted client here; the
real one is exercised by the integration tests."""

import asyncio

from services.guided.leak import known_answer
from services.guided.llm import Completion
from services.guided.phrasing import phrase
from services.guided.templates import MoveContext

TEMPLATE = "Read the question again: what exactly does it ask for? List the quantities you know."
CTX = MoveContext("hint", 1, "en", "math_word_problems", True, answer=known_answer("18"))
GOOD = "Read the question once more: what does it ask for? Which quantities do you know already?"


class ScriptedLLM:
    def __init__(self, *texts):
        self.texts = list(texts)
        self.calls = []

    async def complete(self, messages, caller, *, max_tokens, temperature=0.3):
        self.calls.append((messages, temperature))
        text = self.texts.pop(0)
        return None if text is None else Completion(text, "stop", "m", "local", 0.1)


def run(llm, guard=True):
    return asyncio.run(phrase(llm, CTX, TEMPLATE, "just give me the answer", None, answer=CTX.answer, guard=guard,
                              max_tokens=120))


def test_clean_phrasing_is_sent():
    result = run(ScriptedLLM(GOOD))
    assert (result.text, result.phrased_by, result.regenerated, result.replaced) == (GOOD, "llm", False, False)


def test_a_leak_is_regenerated_with_a_stricter_prompt():
    llm = ScriptedLLM("It is 18. " + GOOD, GOOD)
    result = run(llm)
    assert result.phrased_by == "llm" and result.regenerated and not result.replaced
    assert "Do not write any numbers" in llm.calls[1][0][0]["content"] and llm.calls[1][1] == 0.0
    assert "Never state the final answer" in llm.calls[0][0][0]["content"]


def test_two_leaks_send_the_template():
    result = run(ScriptedLLM("The total is eighteen. " + GOOD, "So 6 + 12 = 18, right?"))
    assert (result.text, result.phrased_by, result.regenerated, result.replaced) == (TEMPLATE, "template", True, True)


def test_failed_call_or_poor_text_sends_the_template():
    assert run(ScriptedLLM(None)).text == TEMPLATE
    assert run(ScriptedLLM("I'll give you the answer soon. What does it ask for?")).phrased_by == "template"
    assert run(None).notes == ["llm disabled"]


def test_once_solved_there_is_nothing_to_guard():
    assert run(ScriptedLLM("Yes, 18 is right! Read the question again: which quantities did you use?"),
               guard=False).phrased_by == "llm"
