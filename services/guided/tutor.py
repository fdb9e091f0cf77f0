"""One guided turn, start to finish: evaluate the student's turn, decide the move (policy.py), update
the learner model (BKT, Redis), build the template reply, let the LLM phrase it behind the leak guard."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from common.auth import Caller
from common.logging import get_logger
from services.guided.evaluate import Evaluation, evaluate_turn
from services.guided.language import detect_language
from services.guided.leak import KnownAnswer, check_leak, known_answer
from services.guided.llm import LLMClient
from services.guided.mastery import bkt_update
from services.guided.phrasing import Phrased, phrase
from services.guided.policy import Decision, SessionState, advance, decide
from services.guided.skills import skill_for
from services.guided.store import (LearnerStore, mastery_of, record_evidence, record_topic, record_weak_point)
from services.guided.templates import MATH_HINTS, MoveContext, template_reply
from services.guided.weak_points import pick_focus, writing_weak_points

log = get_logger("guided.tutor")

LAST_RESORT = {"en": "What would you try next, and why?", "zh": "接下来你打算怎么做？为什么？"}


@dataclass
class TurnInput:
    topic: str
    messages: list[dict]  # {"role", "content"}
    user_id: str
    course_id: str
    problem: str = ""
    answer: str | None = None
    solution: str = ""
    skill: str | None = None
    session_id: str | None = None
    language: str | None = None


@dataclass
class TurnResult:
    reply: str
    decision: Decision
    evaluation: Evaluation
    skill: str
    mastery_before: float
    mastery_after: float
    session_id: str
    turn: int
    language: str
    phrased: Phrased
    focus: dict | None
    state: SessionState
    answer_known: bool


def session_id_for(inp: TurnInput) -> str:
    first_user = next((m["content"] for m in inp.messages if m["role"] == "user"), "")
    digest = hashlib.sha256("\x1f".join([inp.user_id, inp.course_id, inp.topic, first_user]).encode()).hexdigest()
    return digest[:24]


def _safe_template(ctx: MoveContext, answer: KnownAnswer | None, guard: bool) -> str:
    """The template reply, itself guarded: a template that happens to carry the answer (a worked step,
    a number word) falls back to the generic hint, then to a numberless question."""
    text = template_reply(ctx)
    if not guard or not check_leak(text, answer).leaked:
        return text
    level = max(1, min(3, ctx.hint_level or 1))
    generic = MATH_HINTS[level].get(ctx.language, MATH_HINTS[level]["en"])
    if not check_leak(generic, answer).leaked:
        return generic
    return LAST_RESORT.get(ctx.language, LAST_RESORT["en"])


def focus_text(focus: dict | None) -> str:
    """"Ideas and thesis: 2/6 (e.g. “Computers are good and bad …”)": a weak point and one quote of evidence."""
    if not focus:
        return ""
    text = focus.get("description", "")
    for item in focus.get("evidence") or []:
        quote = item.get("quote") if isinstance(item, dict) else item
        if isinstance(quote, str) and quote.strip():
            quote = quote.strip()
            return f"{text} (e.g. “{quote[:80]}{'…' if len(quote) > 80 else ''}”)"
    return text


class GuidedTutor:
    def __init__(self, store: LearnerStore, llm: LLMClient | None, settings):
        self.store = store
        self.llm = llm
        self.settings = settings

    async def turn(self, inp: TurnInput, caller: Caller | None) -> TurnResult:
        student_text = next((m["content"] for m in reversed(inp.messages) if m["role"] == "user"), "")
        language = inp.language or detect_language(student_text or inp.topic)
        answer = known_answer(inp.answer)
        problem = inp.problem or inp.topic
        writing_points = await writing_weak_points(self.store, self.settings.writing_profile_key, inp.user_id,
                                                   inp.course_id)
        skill = inp.skill or skill_for(f"{inp.topic} {inp.problem}",
                                       numeric_answer=bool(answer and answer.number is not None))
        if not inp.skill and skill.startswith("topic:") and writing_points:
            # an open topic ("help me improve my essay"): practise what the writing analysis found weakest
            skill = (pick_focus(skill, [], writing_points) or {}).get("skill", skill)
        session_id = inp.session_id or session_id_for(inp)
        scoped_session = f"{inp.course_id}:{inp.user_id}:{session_id}"
        fresh = not any(m["role"] == "assistant" for m in inp.messages)
        state = SessionState() if fresh else SessionState.from_dict(await self.store.load_session(scoped_session))
        if not fresh and state.turn == 0:  # an expired session: at least do not treat it as a first turn
            state = SessionState(turn=sum(m["role"] == "assistant" for m in inp.messages))

        evaluation = evaluate_turn(student_text, answer, problem)
        decision = decide(state, evaluation, has_known_answer=answer is not None)
        new_state = advance(state, evaluation, decision)

        def change(profile: dict) -> tuple[float, float, dict | None]:
            before = mastery_of(profile, skill)
            after = before
            correct = None
            if evaluation.is_evidence:
                correct = evaluation.kind == "correct"
                after = bkt_update(before, correct, hint_level=state.hint_level)
            record_evidence(profile, skill, correct=correct, before=before, after=after, session_id=session_id,
                            evidence=student_text)
            if evaluation.kind == "wrong":
                record_weak_point(profile, skill, f"wrong answer on: {inp.topic[:80]}", student_text)
            elif evaluation.kind == "stuck" and state.failed_attempts >= 1:
                record_weak_point(profile, skill, f"stuck repeatedly on: {inp.topic[:80]}", student_text)
            record_topic(profile, inp.topic, skill)
            focus = pick_focus(skill, profile.get("weak_points", []), writing_points)
            return before, after, focus

        _, (mastery_before, mastery_after, focus) = await self.store.update_profile(inp.user_id, inp.course_id, change)

        solved = new_state.solved
        guard = answer is not None and not solved  # once the student has produced it, it is theirs
        ctx = MoveContext(move=decision.move, hint_level=decision.hint_level, language=language, skill=skill,
                          demand=evaluation.kind == "demand", solution=inp.solution, answer=answer, solved=solved,
                          weak_point=focus_text(focus) if decision.move == "diagnose" else "",
                          mastery=mastery_after)
        template = _safe_template(ctx, answer, guard)
        phrased = await phrase(self.llm, ctx, template, student_text, caller, answer=answer, guard=guard,
                               max_tokens=self.settings.guided_max_tokens)
        if guard and check_leak(phrased.text, answer).leaked:  # belt and braces: never send a leak
            phrased = Phrased(LAST_RESORT.get(language, LAST_RESORT["en"]), "template", True, phrased.regenerated,
                              True, phrased.notes + ["template leaked; numberless question sent"])
        await self.store.save_session(scoped_session, new_state.to_dict())
        log.info("guided turn", extra={"session_id": session_id, "move": decision.label, "evaluation": evaluation.kind,
                                       "skill": skill, "phrased_by": phrased.phrased_by})
        return TurnResult(phrased.text, decision, evaluation, skill, mastery_before, mastery_after, session_id,
                          new_state.turn, language, phrased, focus, new_state, answer is not None)
