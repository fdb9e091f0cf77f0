"""Deterministic text metrics and rule-based issues (no LLM, no network).

English: words are letter runs (with inner apostrophes), sentences end at . ! ? (runs, closing quotes), paragraphs
are blocks separated by line breaks. Chinese: characters are CJK ideographs, words come from jieba, sentences end at
。！？；… (and ! ? for mixed text). Every span is [start, end) in Unicode code points of the submitted text.

Spelling uses pyspellchecker (an offline checker that ships its English word-frequency dictionary); grammar
problems come from a small set of precise rules (repeated word, a/an, lowercase sentence start, lowercase "i",
missing space after punctuation, run-on sentence length). Chinese text has no offline spell checker here:
`spelling.checker` says so and only rule-based problems are reported.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
from dataclasses import dataclass, field

CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{CJK}]")
_LATIN_RE = re.compile(r"[A-Za-z]")
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
# A word may carry combining marks ("cafe\u0301" is one word) and inner apostrophes.
_WORD_RE = re.compile(f"[{_LATIN}][{_LATIN}\u0300-\u036f]*(?:['’][{_LATIN}][{_LATIN}\u0300-\u036f]*)*")
_EN_SENT_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_ZH_SENT_END = re.compile(r"[。！？；…!?]+[”’」』）)]*")
_PARA_SPLIT = re.compile(r"\n\s*\n|\n")

EN_STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself yourselves also get got go going really thing things lot""".split())

EN_TRANSITIONS = (
    "however", "therefore", "moreover", "furthermore", "in addition", "additionally", "consequently", "thus", "hence",
    "for example", "for instance", "in conclusion", "to conclude", "in summary", "to sum up", "first", "firstly",
    "second", "secondly", "third", "thirdly", "finally", "lastly", "meanwhile", "nevertheless", "nonetheless",
    "on the other hand", "in contrast", "similarly", "likewise", "as a result", "in fact", "indeed", "besides",
    "although", "even though", "because", "since", "instead", "otherwise", "specifically", "in particular",
    "overall", "ultimately", "next", "then", "afterwards", "subsequently", "accordingly", "whereas", "yet",
)
ZH_TRANSITIONS = (
    "首先", "其次", "再次", "然后", "最后", "总之", "总而言之", "综上所述", "因此", "所以", "因为", "但是", "然而",
    "不过", "而且", "此外", "另外", "例如", "比如", "同时", "虽然", "尽管", "于是", "可见", "换句话说", "一方面",
    "另一方面", "由此可见", "相反", "即使", "如果", "不仅", "而是",
)
_CITATION_RES = (
    re.compile(r"\((?:[A-Z][A-Za-z'’-]+(?: et al\.)?(?:,? (?:and|&) [A-Z][A-Za-z'’-]+)?),? (?:19|20)\d\d[a-z]?"
               r"(?:, (?:p|pp)\. ?\d+(?:[-–]\d+)?)?\)"),
    re.compile(r"[A-Z][A-Za-z'’-]+(?: et al\.)? \((?:19|20)\d\d[a-z]?\)"),
    re.compile(r"\[\d+(?:[,–-]\s?\d+)*\]"),
    re.compile(r"（[\u4e00-\u9fff]{1,6}(?:等)?[，,]\s?(?:19|20)\d\d）"),
    re.compile(r"\b(?:according to|as [A-Z][a-z]+ (?:argues|notes|states|writes))\b", re.I),
    re.compile(r"根据[\u4e00-\u9fff]{1,10}(?:的研究|的报告|的数据)"),
)
_ASAP_TOKEN = re.compile(r"@[A-Z]+\d*")
LONG_SENTENCE_WORDS = 40
LONG_SENTENCE_CHARS_ZH = 90


@dataclass
class Issue:
    type: str  # spelling | grammar | repetition | long_sentence | punctuation | style
    severity: str  # low | medium | high
    start: int
    end: int
    message: str
    suggestion: str
    source: str = "rules"

    def as_dict(self, content: str) -> dict:
        return {"type": self.type, "severity": self.severity, "span": [self.start, self.end],
                "quote": content[self.start:self.end], "message": self.message, "suggestion": self.suggestion,
                "source": self.source}


@dataclass
class Analysis:
    """Everything the metrics found, plus token positions for features and evidence."""

    language: str
    metrics: dict
    issues: list[Issue] = field(default_factory=list)
    sentences: list[tuple[int, int]] = field(default_factory=list)
    paragraphs: list[tuple[int, int]] = field(default_factory=list)
    words: list[tuple[int, int, str]] = field(default_factory=list)
    transitions: list[tuple[int, int, str]] = field(default_factory=list)
    citations: list[tuple[int, int]] = field(default_factory=list)


def detect_language(text: str) -> str:
    cjk = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    return "zh" if cjk and cjk >= 0.3 * (cjk + latin / 4) else "en"


# --- segmentation -------------------------------------------------------------------------------------------------
def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def paragraphs(text: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for m in _PARA_SPLIT.finditer(text):
        span = _trimmed(text, pos, m.start())
        if span:
            out.append(span)
        pos = m.end()
    span = _trimmed(text, pos, len(text))
    if span:
        out.append(span)
    return out


def sentences(text: str, language: str) -> list[tuple[int, int]]:
    end_re = _ZH_SENT_END if language == "zh" else _EN_SENT_END
    out = []
    for p_start, p_end in paragraphs(text):
        pos = p_start
        for m in end_re.finditer(text, p_start, p_end):
            span = _trimmed(text, pos, m.end())
            if span:
                out.append(span)
            pos = m.end()
        span = _trimmed(text, pos, p_end)
        if span:
            out.append(span)
    return out


_jieba_lock = threading.Lock()
_jieba = None


def jieba_words(text: str) -> list[tuple[int, int, str]]:
    """jieba tokens with code-point spans, keeping only tokens with a CJK character, letter or digit."""
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
    out = []
    for token, start, end in _jieba.tokenize(text):
        if any(ch.isalnum() for ch in token):
            out.append((start, end, token))
    return out


def english_words(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(text)]


# --- measures -----------------------------------------------------------------------------------------------------
def _mtld_pass(tokens: list[str], threshold: float = 0.72) -> float:
    factors, types, count = 0.0, set(), 0
    for token in tokens:
        count += 1
        types.add(token)
        if len(types) / count <= threshold:
            factors += 1
            types, count = set(), 0
    if count:
        ttr = len(types) / count
        factors += (1 - ttr) / (1 - threshold) if ttr < 1 else 0.0
    return len(tokens) / factors if factors else float(len(tokens))


def mtld(tokens: list[str]) -> float:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010), mean of forward and backward passes."""
    if not tokens:
        return 0.0
    return (_mtld_pass(tokens) + _mtld_pass(tokens[::-1])) / 2


def syllables(word: str) -> int:
    word = word.lower().strip("'’")
    if len(word) <= 3:
        return 1
    word = re.sub(r"(?:[^laeiouy]es|ed|[^laeiouy]e)$", "", word)
    word = re.sub(r"^y", "", word)
    return max(1, len(re.findall(r"[aeiouy]{1,2}", word)))


def _spread(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


_spell_lock = threading.Lock()
_spell = None


def spell_checker():
    global _spell
    with _spell_lock:
        if _spell is None:
            from spellchecker import SpellChecker

            _spell = SpellChecker(language="en", distance=1)
    return _spell


def _suggest(word: str) -> str | None:
    checker = spell_checker()
    candidate = checker.correction(word.lower())
    if not candidate or candidate == word.lower():
        return None
    return candidate.capitalize() if word[:1].isupper() else candidate


def analyse(text: str, language: str | None = None, *, spelling: bool = True, suggestions: bool = True) -> Analysis:
    """Metrics and rule-based issues for one text. `suggestions=False` skips spelling corrections (faster:
    used for training features, where only the counts matter)."""
    language = language or detect_language(text)
    paras = paragraphs(text)
    sents = sentences(text, language)
    analysis = Analysis(language=language, metrics={}, sentences=sents, paragraphs=paras)
    if language == "zh":
        _analyse_zh(text, analysis)
    else:
        _analyse_en(text, analysis, spelling=spelling, suggestions=suggestions)
    analysis.citations = sorted({m.span() for r in _CITATION_RES for m in r.finditer(text)})
    analysis.metrics["citations"] = {"count": len(analysis.citations),
                                     "spans": [list(s) for s in analysis.citations[:20]]}
    seen, unique = set(), []
    for issue in sorted(analysis.issues, key=lambda i: (i.start, i.end)):
        if (issue.start, issue.end) not in seen:  # one issue per span (e.g. "i" at a sentence start)
            seen.add((issue.start, issue.end))
            unique.append(issue)
    analysis.issues = unique
    return analysis


def _sentence_word_counts(sents, words) -> list[int]:
    counts, i = [], 0
    starts = [w[0] for w in words]
    import bisect

    for s, e in sents:
        lo, hi = bisect.bisect_left(starts, s), bisect.bisect_left(starts, e)
        counts.append(hi - lo)
        i = hi
    return counts


def _repetition(text: str, words: list[tuple[int, int, str]], key, stop, analysis: Analysis, language: str) -> dict:
    content = [(s, e, key(w)) for s, e, w in words if key(w) not in stop and len(key(w)) > (1 if language == "zh" else 3)]
    freq: dict[str, list[tuple[int, int]]] = {}
    for s, e, w in content:
        freq.setdefault(w, []).append((s, e))
    total = max(1, len(content))
    over = sorted(((w, spans) for w, spans in freq.items() if len(spans) >= 4 and len(spans) / total >= 0.025),
                  key=lambda kv: -len(kv[1]))
    # Adjacent repeats: "the the", "我们我们".
    adjacent = 0
    for (s1, e1, w1), (s2, e2, w2) in zip(words, words[1:]):
        if key(w1) == key(w2) and w1.isalpha() and text[e1:s2].strip() == "" and len(w1) > (0 if language == "zh" else 1):
            if language == "zh" and len(w1) < 2:
                continue
            adjacent += 1
            analysis.issues.append(Issue("grammar", "medium", s1, e2, "The same word is written twice in a row.",
                                         f"Delete the repeated \"{w2}\"." if language == "en" else f"删去重复的“{w2}”。"))
    for w, spans in over[:3]:
        s, e = spans[2]  # the third use is where it starts to feel repetitive
        msg = (f"\"{w}\" is used {len(spans)} times." if language == "en" else f"“{w}”出现了 {len(spans)} 次。")
        sug = ("Replace some uses with a synonym or a pronoun, or combine the sentences." if language == "en"
               else "换用近义词或代词，或合并句子，减少重复。")
        analysis.issues.append(Issue("repetition", "low", s, e, msg, sug))
    return {"repeated_words": [{"word": w, "count": len(spans)} for w, spans in over[:5]],
            "repetition_rate": round(sum(len(sp) for _, sp in over) / total, 4),
            "adjacent_repeats": adjacent}


def _transitions(text: str, terms, analysis: Analysis, language: str) -> dict:
    found = []
    lowered = text.lower()
    for term in terms:
        pattern = re.escape(term) if language == "zh" else rf"\b{re.escape(term)}\b"
        for m in re.finditer(pattern, lowered):
            found.append((m.start(), m.end(), term))
    found.sort()
    # Keep the longest non-overlapping matches ("on the other hand" over "other").
    kept, last_end = [], -1
    for s, e, t in sorted(found, key=lambda x: (x[0], -(x[1] - x[0]))):
        if s >= last_end:
            kept.append((s, e, t))
            last_end = e
    analysis.transitions = kept
    counts: dict[str, int] = {}
    for _, _, t in kept:
        counts[t] = counts.get(t, 0) + 1
    return {"count": len(kept), "distinct": len(counts),
            "used": [{"term": t, "count": c} for t, c in sorted(counts.items(), key=lambda kv: -kv[1])]}


def _analyse_en(text: str, analysis: Analysis, *, spelling: bool, suggestions: bool) -> None:
    words = english_words(text)
    analysis.words = words
    sents, paras = analysis.sentences, analysis.paragraphs
    lengths = _sentence_word_counts(sents, words)
    lower = [w.lower() for _, _, w in words]
    n_words, n_sents = len(words), max(1, len(sents))
    syl = sum(syllables(w) for w in lower)
    fre = 206.835 - 1.015 * (n_words / n_sents) - 84.6 * (syl / max(1, n_words)) if n_words else 0.0
    fk = 0.39 * (n_words / n_sents) + 11.8 * (syl / max(1, n_words)) - 15.59 if n_words else 0.0
    m = analysis.metrics
    m.update(
        language="en", unit="words", characters=len(text), words=n_words, sentences=len(sents),
        paragraphs=len(paras),
        sentence_length={"mean": round(statistics.fmean(lengths), 2) if lengths else 0.0,
                         "stdev": round(_spread(lengths), 2), "max": max(lengths, default=0), "unit": "words"},
        word_length_mean=round(statistics.fmean(len(w) for w in lower), 3) if lower else 0.0,
        readability={"flesch_reading_ease": round(fre, 1), "flesch_kincaid_grade": round(fk, 1),
                     "syllables_per_word": round(syl / max(1, n_words), 3)},
        lexical_diversity={"mtld": round(mtld(lower), 2), "ttr": round(len(set(lower)) / max(1, n_words), 4),
                           "unique_words": len(set(lower))},
    )
    m["repetition"] = _repetition(text, words, str.lower, EN_STOPWORDS, analysis, "en")
    m["transitions"] = _transitions(text, EN_TRANSITIONS, analysis, "en")
    # Spelling: lowercase alphabetic words not in the dictionary (capitalised words may be names; ASAP's
    # @CAPS-style anonymisation tokens are skipped).
    misspelled = []
    if spelling:
        checker = spell_checker()
        candidates = [(s, e, w) for s, e, w in words
                      if w.isascii() and w.isalpha() and not w[:1].isupper() and not (s > 0 and text[s - 1] == "@") and len(w) > 1]
        unknown = checker.unknown([w.lower() for _, _, w in candidates])
        for s, e, w in candidates:
            if w.lower() in unknown:
                misspelled.append((s, e, w))
        cache: dict[str, str | None] = {}
        for s, e, w in misspelled[:60]:
            if suggestions:
                if w not in cache:
                    cache[w] = _suggest(w)
                fix = cache[w]
            else:
                fix = None
            analysis.issues.append(Issue(
                "spelling", "medium", s, e, f"\"{w}\" is not in the dictionary.",
                f"Did you mean \"{fix}\"?" if fix else f"Check the spelling of \"{w}\".", source="pyspellchecker"))
    m["spelling"] = {"checker": "pyspellchecker (offline, English word-frequency dictionary)" if spelling else None,
                     "errors": len(misspelled), "rate": round(len(misspelled) / max(1, n_words), 4)}
    grammar = _grammar_en(text, words, sents, lengths, analysis)
    m["grammar"] = {"checker": "tutorstack rules (a/an, repeated word, capitalisation, spacing, run-on length)",
                    "errors": grammar, "rate": round(grammar / max(1, n_words), 4)}


_VOWEL_SOUND_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")
_CONSONANT_SOUND_EXCEPTIONS = ("uni", "use", "usu", "euro", "one", "once", "ufo", "uto", "ure")


def _grammar_en(text, words, sents, lengths, analysis: Analysis) -> int:
    before = len(analysis.issues)
    for (s1, e1, w1), (s2, e2, w2) in zip(words, words[1:]):
        if w1.lower() in ("a", "an") and text[e1:s2] == " " and w2.isalpha() and not w2.isupper():
            nxt = w2.lower()
            vowel = nxt[0] in "aeiou"
            if nxt.startswith(_VOWEL_SOUND_EXCEPTIONS):
                vowel = True
            elif nxt.startswith(_CONSONANT_SOUND_EXCEPTIONS):
                vowel = False
            want = "an" if vowel else "a"
            if w1.lower() != want:
                fixed = want.capitalize() if w1[0].isupper() else want
                analysis.issues.append(Issue("grammar", "medium", s1, e2, f"Use \"{want}\" before \"{w2}\".",
                                             f"Write \"{fixed} {w2}\"."))
    for s, e, w in words:
        if w == "i" or w.startswith(("i'", "i’")) and w.lower() in ("i'm", "i've", "i'll", "i'd", "i’m", "i’ve",
                                                                   "i’ll", "i’d"):
            analysis.issues.append(Issue("grammar", "medium", s, e, "The pronoun \"I\" is always capitalised.",
                                         f"Write \"{'I' + w[1:]}\"."))
    for s, e in sents:
        first = _WORD_RE.search(text, s, e)
        if first and first.start() == s and first.group()[0].islower():
            w = first.group()
            analysis.issues.append(Issue("grammar", "low", first.start(), first.end(),
                                         "A sentence should start with a capital letter.",
                                         f"Write \"{w[0].upper() + w[1:]}\"."))
    for m in re.finditer(r"[a-z]{2,}[,;:.!?](?=[A-Za-z]{2,})", text):
        if m.group()[-1] == "." and text[m.end():m.end() + 3].lower() in ("com", "org", "net"):
            continue
        analysis.issues.append(Issue("punctuation", "low", m.start(), m.end(), "Missing space after punctuation.",
                                     f"Add a space after \"{m.group()[-1]}\"."))
    for (s, e), n in zip(sents, lengths):
        if n > LONG_SENTENCE_WORDS:
            analysis.issues.append(Issue("long_sentence", "medium", s, e, f"This sentence has {n} words.",
                                         "Split it into two or three sentences, one idea each."))
    return len(analysis.issues) - before


def _analyse_zh(text: str, analysis: Analysis) -> None:
    words = jieba_words(text)
    analysis.words = words
    sents, paras = analysis.sentences, analysis.paragraphs
    chars = len(_CJK_RE.findall(text))
    lengths = [len(_CJK_RE.findall(text[s:e])) for s, e in sents]
    word_lengths = _sentence_word_counts(sents, words)
    tokens = [w for _, _, w in words]
    n_words, n_sents = len(words), max(1, len(sents))
    m = analysis.metrics
    m.update(
        language="zh", unit="characters", characters=chars, words=n_words, sentences=len(sents),
        paragraphs=len(paras),
        sentence_length={"mean": round(statistics.fmean(lengths), 2) if lengths else 0.0,
                         "stdev": round(_spread(lengths), 2), "max": max(lengths, default=0), "unit": "characters",
                         "mean_words": round(statistics.fmean(word_lengths), 2) if word_lengths else 0.0},
        word_length_mean=round(statistics.fmean(len(w) for w in tokens), 3) if tokens else 0.0,
        # Chinese readability: mean sentence length in characters and the share of multi-character words
        # (longer sentences and more compound words read harder); no Flesch for Chinese.
        readability={"mean_sentence_chars": round(chars / n_sents, 2),
                     "multichar_word_ratio": round(sum(1 for w in tokens if len(w) > 1) / max(1, n_words), 4)},
        lexical_diversity={"mtld": round(mtld(tokens), 2), "ttr": round(len(set(tokens)) / max(1, n_words), 4),
                           "unique_words": len(set(tokens))},
    )
    zh_stop = frozenset("的 了 是 在 和 也 就 都 而 及 与 着 或 一个 我们 你们 他们 这 那 有 我 你 他 她 它 不 很 会 要 对 说 上 下 中".split())
    m["repetition"] = _repetition(text, words, lambda w: w, zh_stop, analysis, "zh")
    m["transitions"] = _transitions(text, ZH_TRANSITIONS, analysis, "zh")
    m["spelling"] = {"checker": None, "errors": 0, "rate": 0.0,
                     "note": "no offline Chinese spell checker is available; rule-based checks only"}
    before = len(analysis.issues)
    for mt in re.finditer(f"(?<=[{CJK}])[,;:?!](?=[{CJK}])|(?<=[{CJK}])\\.(?=[{CJK}]|$)", text):
        full = {",": "，", ";": "；", ":": "：", "?": "？", "!": "！", ".": "。"}[mt.group()]
        analysis.issues.append(Issue("punctuation", "low", mt.start(), mt.end(), "中文句子里用了半角标点。",
                                     f"改用全角标点“{full}”。"))
    for (s, e), n in zip(sents, lengths):
        if n > LONG_SENTENCE_CHARS_ZH:
            analysis.issues.append(Issue("long_sentence", "medium", s, e, f"这个句子有 {n} 个字。",
                                         "把它拆成两三个短句，每句只讲一个意思。"))
    grammar = len(analysis.issues) - before + sum(1 for i in analysis.issues[:before] if i.type == "grammar")
    m["grammar"] = {"checker": "tutorstack rules (half-width punctuation, repeated words, run-on length)",
                    "errors": grammar, "rate": round(grammar / max(1, n_words), 4)}


def summary_numbers(a: Analysis) -> dict:
    """A flat dict of the numbers used as scorer features (see scorer.FEATURES)."""
    m = a.metrics
    words = max(1, m["words"])
    sents = max(1, m["sentences"])
    return {
        "log_words": math.log1p(m["words"]),
        "log_sentences": math.log1p(m["sentences"]),
        "log_paragraphs": math.log1p(m["paragraphs"]),
        "sent_len_mean": m["sentence_length"]["mean"] if m["language"] == "en" else m["sentence_length"]["mean_words"],
        "sent_len_std": m["sentence_length"]["stdev"] / (1 if m["language"] == "en" else 1.6),
        "word_len_mean": m["word_length_mean"] if m["language"] == "en" else 4.4 + (m["word_length_mean"] - 1.6),
        "mtld": m["lexical_diversity"]["mtld"],
        "ttr": m["lexical_diversity"]["ttr"],
        "log_unique": math.log1p(m["lexical_diversity"]["unique_words"]),
        "repetition_rate": m["repetition"]["repetition_rate"],
        "spelling_rate": m["spelling"]["rate"],
        "grammar_rate": m["grammar"]["rate"],
        "transitions_per_sent": m["transitions"]["count"] / sents,
        "transitions_distinct": m["transitions"]["distinct"],
        "citations": min(5, m["citations"]["count"]),
        "words_per_paragraph": words / max(1, m["paragraphs"]),
    }
