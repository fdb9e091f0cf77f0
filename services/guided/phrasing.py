"""The LLM phrases the chosen move; the guard decides whether its words may be sent.

1. Ask the model to say the template's message in its own words (the system prompt names the move and
   what it may not reveal). Short: max_tokens ~120, the embedded model is weak.
2. Check the text: the answer-leak guard (leak.py), then plain quality checks (language, length,
   a question where the move needs one, no echo of the prompt, no talk of giving the answer, no loops,
   and at least a quarter of the template's content words kept: a rephrasing, not a new message).
3. A leak: regenerate once with a stricter prompt (no numbers, temperature 0); a second leak, a
   failed call or a text that fails the checks: send the template (phrased_by "template").
The text is always complete before anything is sent, streaming included."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.auth import Caller
from services.guided.language import cjk_share
from services.guided.leak import KnownAnswer, check_leak
from services.guided.llm import LLMClient
from services.guided.skills import skill_name
from services.guided.templates import MOVE_INSTRUCTIONS, MoveContext

QUESTION_MOVES = {"diagnose", "ask", "hint", "worked_example", "check_understanding"}
_ECHO = re.compile(r"(tutor.s message|student said|rephrase|as an ai|system prompt)", re.I)
_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)")
# The model promising or announcing the answer contradicts every move, whatever follows.
_ANSWER_TALK = re.compile(
    r"(\bthe (final |correct )?answer( to [^.!\n]{0,60})? (is|was|would be)\b|here'?s the (answer|solution)|\bi'?ll (just )?(give|tell) you "
    r"the answer|\bi('ll| will) (try to )?solve (it|this) for you|\bsolution is\b|答案是|答案为|我(来)?帮你(写|解|算))", re.I)
_CONTENT_WORD = re.compile(r"[a-z]{4,}|[\u3400-\u9fff]{2}", re.I)
_STOP = {"what", "your", "with", "that", "this", "have", "from", "they", "them", "then", "when", "will", "would",
         "could", "should", "about", "which", "there", "their", "here", "just", "because", "does", "each", "into"}


@dataclass
class Phrased:
    text: str
    phrased_by: str  # "llm" | "template"
    leak_checked: bool
    regenerated: bool = False
    replaced: bool = False  # the model's text was dropped for the template
    notes: list[str] = field(default_factory=list)
    model: str = ""


def system_prompt(ctx: MoveContext, strict: bool) -> str:
    language = "Chinese" if ctx.language == "zh" else "English"
    rules = ("Never state the final answer, never solve the whole problem, never write the student's text for them.")
    if strict:
        rules += " Do not write any numbers or results at all. Only rephrase the message; add nothing."
    move = MOVE_INSTRUCTIONS[ctx.move].format(level=ctx.hint_level)
    return (f"You are a patient Socratic tutor for {skill_name(ctx.skill, 'en')}. This turn: {move} "
            f"Rephrase the tutor's message for the student in {language}, warmly, in at most three sentences. {rules}")


def user_prompt(template: str, student_text: str) -> str:
    return f"Student: {student_text[:300]}\n\nTutor's message to rephrase:\n{template}"


def trim_to_sentence(text: str) -> str:
    """A reply cut off by max_tokens ends at its last full sentence."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


def quality_problems(text: str, ctx: MoveContext, template: str = "") -> list[str]:
    problems = []
    if len(text.strip()) < 15:
        problems.append("too short")
    if len(text) > 900:
        problems.append("too long")
    share = cjk_share(text)
    if ctx.language == "zh" and share < 0.3:
        problems.append("not in Chinese")
    if ctx.language == "en" and share > 0.05:
        problems.append("not in English")
    if ctx.move in QUESTION_MOVES and "?" not in text and "？" not in text:
        problems.append("asks no question")
    if _ECHO.search(text):
        problems.append("echoes the prompt")
    if _ANSWER_TALK.search(text):
        problems.append("talks about giving the answer")
    if repetitive(text):
        problems.append("repeats itself")
    if template and retained(template, text) < 0.25:
        problems.append("drops the move's content")
    return problems


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _CONTENT_WORD.findall(text)} - _STOP


def retained(template: str, text: str) -> float:
    """The share of the template's content words (and Chinese character pairs) the text keeps."""
    wanted = content_words(template)
    return len(wanted & content_words(text)) / len(wanted) if wanted else 1.0


def repetitive(text: str) -> bool:
    """A sentence said twice, or the same word 4-gram three times: the small model's loops."""
    sentences = [s.strip().lower() for s in re.split(r"[.!?。！？\n]+", text) if len(s.strip()) > 8]
    if len(sentences) != len(set(sentences)):
        return True
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return any(grams.count(g) >= 3 for g in set(grams))


async def phrase(llm: LLMClient | None, ctx: MoveContext, template: str, student_text: str, caller: Caller | None,
                 *, answer: KnownAnswer | None, guard: bool, max_tokens: int) -> Phrased:
    if llm is None:
        return Phrased(template, "template", guard, notes=["llm disabled"])
    notes: list[str] = []
    regenerated = False
    for strict in (False, True):
        messages = [{"role": "system", "content": system_prompt(ctx, strict)},
                    {"role": "user", "content": user_prompt(template, student_text)}]
        completion = await llm.complete(messages, caller, max_tokens=max_tokens, temperature=0.0 if strict else 0.3)
        if completion is None:
            notes.append("llm call failed")
            break
        text = completion.text.strip()
        if completion.finish_reason == "length":
            text = trim_to_sentence(text)
        if guard:
            leak = check_leak(text, answer)
            if leak.leaked:
                notes.append(f"leak: {leak.reason}" + ("" if strict else "; regenerating with a stricter prompt"))
                regenerated = regenerated or not strict
                continue
        problems = quality_problems(text, ctx, template)
        if problems:
            notes.append("model text rejected: " + ", ".join(problems))
            break
        return Phrased(text, "llm", guard, regenerated=regenerated, notes=notes, model=completion.model)
    return Phrased(template, "template", guard, regenerated=regenerated, replaced=True, notes=notes)
