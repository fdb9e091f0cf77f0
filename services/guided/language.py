"""Which language to reply in: the learner's, detected from their own messages (Chinese or English)."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """"zh" when Chinese characters make up a fair share of the letters, else "en"."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk >= 2 and cjk * 4 >= latin:  # a Chinese character carries about as much as a 4-letter word
        return "zh"
    return "en"


def cjk_share(text: str) -> float:
    letters = len(_CJK.findall(text)) + len(_LATIN.findall(text))
    return len(_CJK.findall(text)) / letters if letters else 0.0
