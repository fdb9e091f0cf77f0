"""What the student's latest turn was: the evidence the policy and the learner model act on.

Deterministic where it can be, conservative where it cannot:
- correct / wrong: only against a known answer. Numeric: the number the student ends on equals the
  answer (correct); a number that is neither the answer nor one quoted from the problem (wrong).
  Target text: word-3-gram overlap >= 0.8 is correct; anything else is an attempt (unknown).
- demand: asks for the answer or the finished text outright (English and Chinese patterns).
- stuck: says they do not know / are lost.
- understood: says they got it (without a checkable answer).
- question / attempt: the rest; no mastery evidence.
Only correct and wrong update mastery."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from services.guided.leak import KnownAnswer, text_overlap
from services.guided.numbers import last_number, numbers_in, same_number

Kind = Literal["correct", "wrong", "demand", "stuck", "understood", "question", "attempt"]

_DEMAND = [re.compile(p, re.I) for p in (
    r"\b(just|simply|please)?\s*(give|tell|show|send)\s+(me|us)\s+(the\s+|your\s+)?(final\s+|correct\s+|right\s+)?"
    r"(answer|solution|result|number|answers)",
    r"\bwhat('s| is| was)\s+the\s+(final\s+|correct\s+|right\s+)?(answer|solution|result)",
    r"\b(write|do|solve|finish|complete|fix)\s+(it|this|that|the\s+\w+|my\s+\w+)(\s+\w+)?\s+for\s+me\b",
    r"\b(can|could|would|will)\s+you\s+(just\s+)?(write|solve|do|answer|finish)\b",
    r"\bjust\s+(the\s+)?(answer|solution|result)\b",
    r"\b(i|we)\s+(just\s+)?(want|need)\s+(the\s+)?(final\s+)?(answer|solution|result)",
    r"\bskip\s+(the\s+)?(hints?|explanation)",
    r"\bno\s+hints?\b",
    r"(直接|快|就)?(告诉|给|发)(我|我们)(最终|正确|标准)?(的)?(答案|结果|解答|范文)",
    r"答案是(多少|什么|几)",
    r"(帮|替|给)我(写|做|解|算|改)",
    r"(直接|你)(写|做|解|算)(出来|一下|一个|吧)",
    r"(只|就)要(答案|结果)",
    r"不要(提示|讲解|解释)",
)]
_STUCK = [re.compile(p, re.I) for p in (
    r"\bi\s+(don'?t|do not|dont)\s+(know|understand|get\s+it)\b", r"\bno\s+idea\b", r"\b(i'?m|i am)\s+(lost|stuck|confused)\b",
    r"\bnot\s+sure\b", r"\bhelp\b", r"不(会|懂|知道|明白|清楚)", r"没(思路|头绪|办法)", r"卡住", r"怎么(办|做|练|写)",
)]
_UNDERSTOOD = [re.compile(p, re.I) for p in (
    r"\b(got it|i see|makes sense|i understand|understood|oh,? right|that helps)\b", r"(明白|懂)了", r"原来如此", r"知道了",
)]


@dataclass(frozen=True)
class Evaluation:
    kind: Kind
    detail: str = ""

    @property
    def is_evidence(self) -> bool:
        return self.kind in ("correct", "wrong")


def _matches(patterns, text: str) -> bool:
    return any(p.search(text) for p in patterns)


def is_demand(text: str) -> bool:
    return _matches(_DEMAND, text)


def evaluate_turn(text: str, answer: KnownAnswer | None, problem: str = "") -> Evaluation:
    text = text.strip()
    if answer is not None and answer.number is not None:
        final = last_number(text)
        if final is not None and same_number(final, answer.number):
            return Evaluation("correct", f"ends on {final}, the answer")
        quoted = numbers_in(problem)
        if final is not None and not any(same_number(final, q) for q in quoted) and not is_demand(text):
            return Evaluation("wrong", f"ends on {final}; expected another value")
    elif answer is not None and answer.text:
        overlap = text_overlap(answer.text, text)
        if overlap >= 0.8:
            return Evaluation("correct", f"matches {overlap:.0%} of the target text")
    if is_demand(text):
        return Evaluation("demand", "asks for the answer outright")
    if _matches(_UNDERSTOOD, text):
        return Evaluation("understood")
    if _matches(_STUCK, text):
        return Evaluation("stuck")
    if text.endswith(("?", "？")) or re.search(r"^(how|what|why|which|when|can|could|should|is|are|do|does)\b", text, re.I) \
            or re.search(r"(吗|呢|什么|怎么|为什么|如何)[？?]?$", text):
        return Evaluation("question")
    return Evaluation("attempt")
