"""The answer-leak guard: does a tutor reply state the known final answer before the student has?

A known answer is either a number (maths: "18", "$1,250", "eighteen") or a target text (a sentence the
student is to produce). Numbers are matched in every written form numbers.py reads (digits with commas
or currency, inside an equation, English number words, Chinese numerals); a target text is matched by
containment or by overlap of its word 3-grams (character 4-grams for Chinese). Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from services.guided.numbers import digit_spans, numbers_in, same_number, word_spans

_CJK = re.compile(r"[\u3400-\u9fff]")
_TOKEN = re.compile(r"[a-z0-9']+|[\u3400-\u9fff]")


@dataclass(frozen=True)
class KnownAnswer:
    raw: str
    number: Decimal | None = None  # a numeric answer
    text: str | None = None  # a target text

    @property
    def is_known(self) -> bool:
        return self.number is not None or bool(self.text)


def known_answer(answer: str | None) -> KnownAnswer | None:
    """Read a request's `answer`: a short text that is one number ("18", "$1,250.00", "eighteen", "十八")
    is numeric; anything longer is a target text."""
    if answer is None or not answer.strip():
        return None
    raw = answer.strip()
    stripped = re.sub(r"[\s$€£¥%.,:;!?。，！？]+$", "", raw)
    spans = digit_spans(stripped) or word_spans(stripped)
    values = {v for _, _, v in spans}
    if len(values) == 1 and len(_TOKEN.findall(stripped.lower())) <= 4:
        return KnownAnswer(raw, number=next(iter(values)))
    if not spans:
        from services.guided.numbers import chinese_spans

        zh = chinese_spans(stripped)
        if len(zh) == 1 and zh[0][1] - zh[0][0] == len(stripped):
            return KnownAnswer(raw, number=zh[0][2])
    return KnownAnswer(raw, text=raw)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _grams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def text_overlap(target: str, reply: str) -> float:
    """The share of the target's n-grams (3 words, or 4 characters for Chinese) found in the reply."""
    target_toks, reply_toks = tokens(target), tokens(reply)
    if not target_toks:
        return 0.0
    n = 4 if _CJK.search(target) else 3
    n = min(n, len(target_toks))
    grams = _grams(target_toks, n)
    return len(grams & _grams(reply_toks, n)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class LeakCheck:
    leaked: bool
    reason: str = ""


def check_leak(reply: str, answer: KnownAnswer | None, *, text_threshold: float = 0.6) -> LeakCheck:
    """Whether `reply` reveals `answer`. No known answer: nothing to leak."""
    if answer is None or not answer.is_known or not reply:
        return LeakCheck(False)
    if answer.number is not None:
        for value in numbers_in(reply):
            if same_number(value, answer.number):
                return LeakCheck(True, f"states the final answer {answer.raw!r}")
        return LeakCheck(False)
    target = " ".join(tokens(answer.text or ""))
    if target and target in " ".join(tokens(reply)):
        return LeakCheck(True, "contains the target text")
    overlap = text_overlap(answer.text or "", reply)
    if len(tokens(answer.text or "")) >= 3 and overlap >= text_threshold:
        return LeakCheck(True, f"reproduces {overlap:.0%} of the target text")
    return LeakCheck(False)
