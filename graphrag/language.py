"""Which languages a text is written in, as shares that sum to 1: {"en": 0.7, "zh": 0.3}.

No model: scripts decide. A Han character counts as one unit and a Latin-script word as
1.5 units (an English word carries about as much as one and a half Chinese characters), so
"用 thesis statement 写开头" is mostly Chinese while "什么是 thesis statement?" is mixed.
Digits and punctuation carry no language. Other scripts (Cyrillic, Arabic, ...) count as
"other": no embedder here claims them, so a dense leg gets no weight for them.

"en" stands for Latin-script text in general: the English embedder is used for it.
"""

from __future__ import annotations

import re

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\uac00-\ud7af]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_OTHER_LETTER = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0900-\u0dff\u0e00-\u0e7f]+")
LATIN_WORD_WEIGHT = 1.5

LANGUAGES = ("en", "zh", "other")


def language_shares(text: str) -> dict[str, float]:
    """Shares of "en", "zh" and "other" (those present only); {} for text without letters."""
    zh = len(_HAN.findall(text))
    en = LATIN_WORD_WEIGHT * len(_LATIN_WORD.findall(text))
    other = len(_KANA_HANGUL.findall(text)) + LATIN_WORD_WEIGHT * len(_OTHER_LETTER.findall(text))
    total = zh + en + other
    if total == 0:
        return {}
    return {lang: round(units / total, 4) for lang, units in (("en", en), ("zh", zh), ("other", other)) if units}


def primary_language(text: str, mixed_threshold: float = 0.2) -> str:
    """"en", "zh", "other", "mixed" (at least two languages each over mixed_threshold), or "none"."""
    shares = language_shares(text)
    if not shares:
        return "none"
    strong = [lang for lang, share in shares.items() if share >= mixed_threshold]
    if len(strong) > 1:
        return "mixed"
    return max(shares, key=shares.get)


def coverage(shares: dict[str, float], languages: set[str] | frozenset[str]) -> float:
    """How much of a text (by its language shares) a model that understands `languages` covers.
    Text with no letters at all (a number, a code) is treated as covered."""
    if not shares:
        return 1.0
    return round(sum(share for lang, share in shares.items() if lang in languages), 4)
