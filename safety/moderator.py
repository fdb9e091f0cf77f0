"""The moderation classifier: one `Moderator` that scores a text for each category.

Checks, each giving a score in [0, 1] per category:
- `regex`: personal data (safety.pii) and prompt-injection patterns (safety.patterns);
- `lexicon`: per-category phrase lists in English and Chinese (safety/lists/*.lexicon.txt);
- `profanity_model`: alt-profanity-check's shipped linear model, English harassment and abuse;
- `embedding`: similarity to curated seed phrasings per category (safety/lists/<category>.<lang>.txt)
  that must also be closer to them than to hard negatives (benign.<lang>.txt) by a margin: MiniLM-L6 int8 for English, multilingual-e5 for Chinese.
Scores of one category combine as a noisy OR; a category is flagged at >= 0.5. The embedding
thresholds come from safety/thresholds.yaml (calibrated on safety/dev/dev.jsonl by
`python -m safety.calibrate`).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from safety import pii
from safety.patterns import INJECTION, LISTS, lexicon_patterns

CATEGORIES = ("self_harm", "sexual", "violence", "harassment", "pii", "prompt_injection")
EMBEDDED_CATEGORIES = ("self_harm", "sexual", "violence", "harassment", "prompt_injection")
KINDS = ("input", "output", "retrieved", "tool")
FLAG_AT = 0.5
THRESHOLDS_FILE = Path(__file__).parent / "thresholds.yaml"

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_WINDOW_SPLIT = re.compile(r"(?<=[.!?。！？；;\n])\s*")
WINDOW_CHARS = 80  # characters per embedded window: about a sentence, so a benign one does not dilute
CACHE_SIZE = 4096  # embedded windows kept per language
MIN_WINDOW_CHARS = 12  # shorter sentences ("OK.", "Hi!") join the next one
MAX_WINDOWS = 24  # longer texts: the first windows and the last ones
# A Chinese character carries about what an English word does: 80 of them are three or four sentences,
# enough for a benign context to dilute one unsafe clause, and 12 is already a full sentence. Chinese
# windows are therefore shorter, and an over-long sentence is cut at a comma rather than mid-word.
WINDOW_CHARS_ZH = 40
MIN_WINDOW_CHARS_ZH = 6
_CLAUSE_END = re.compile(r"[，,、：:）)」』”]")


def _t2s():
    """Traditional -> simplified Chinese (OpenCC, character and phrase tables): the lexicon, the
    patterns and the seed phrasings are written in simplified characters, and students in Taiwan or
    Hong Kong write 殺/憂鬱/無視; without this a traditional text matches no Chinese phrase at all."""
    try:
        import opencc

        return opencc.OpenCC("t2s").convert
    except (ImportError, OSError):  # an optional dependency: without it traditional text is taken as is
        return lambda text: text


_TO_SIMPLIFIED = _t2s()


def to_simplified(text: str) -> str:
    return _TO_SIMPLIFIED(text) if _CJK.search(text) else text


@dataclass(frozen=True)
class Finding:
    category: str
    score: float
    source: str  # which check: "regex", "lexicon", "profanity_model", "embedding"
    start: int | None = None
    end: int | None = None


def detect_language(text: str) -> str:
    """'zh' when Chinese characters carry the text (about two per English word), else 'en'."""
    cjk = len(_CJK.findall(text))
    if not cjk:
        return "en"
    return "zh" if cjk >= 2 * len(_LATIN_WORD.findall(text)) else "en"


def _seeds(name: str) -> list[str]:
    path = LISTS / name
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def windows(text: str, lang: str = "en") -> list[str]:
    """The text as windows of about WINDOW_CHARS characters (WINDOW_CHARS_ZH for Chinese), on sentence
    ends where possible."""
    text = text.strip()
    if not text:
        return []
    size, least = (WINDOW_CHARS_ZH, MIN_WINDOW_CHARS_ZH) if lang == "zh" else (WINDOW_CHARS, MIN_WINDOW_CHARS)
    parts, current = [], ""
    for sentence in _WINDOW_SPLIT.split(text):
        while len(sentence) > size:
            if current:
                parts.append(current)
                current = ""
            cut = size
            if lang == "zh":  # at the last clause end inside the window, when there is one past `least`
                ends = [m.end() for m in _CLAUSE_END.finditer(sentence, least, size)]
                cut = ends[-1] if ends else size
            parts.append(sentence[:cut])
            sentence = sentence[cut:]
        if current and (len(current) >= least or len(current) + len(sentence) + 1 > size):
            parts.append(current)
            current = ""
        current = f"{current} {sentence}".strip()
    if current:
        parts.append(current)
    if len(parts) > MAX_WINDOWS:
        half = MAX_WINDOWS // 2
        parts = parts[:half] + parts[-half:]
    return parts


class SimilarityIndex:
    """Seed vectors per category plus hard negatives, for one embedder and one language."""

    def __init__(self, embedder, lang: str, top_k: int = 2):
        self.embedder = embedder
        self.lang = lang
        self.top_k = top_k
        seeds = (lambda name: [to_simplified(t) for t in _seeds(name)]) if lang == "zh" else _seeds
        self.seeds = {c: embedder.encode(seeds(f"{c}.{lang}.txt")) for c in EMBEDDED_CATEGORIES}
        self.benign = embedder.encode(seeds(f"benign.{lang}.txt"))
        self._cache: dict[str, np.ndarray] = {}  # insertion-ordered: the oldest entries go first
        self._cache_lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Window vectors, from a small cache first: a streamed answer is re-checked over a sliding
        window, so most of its sentences were embedded by the previous scan."""
        with self._cache_lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                for text, vector in zip(missing, self.embedder.encode(missing)):
                    self._cache[text] = vector
                while len(self._cache) > CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
            return np.stack([self._cache[t] for t in texts])

    def raw(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Per category, per text window: (mean of the top-k seed similarities, same for benign)."""
        vectors = self.encode(texts)
        benign = _top_mean(vectors @ self.benign.T, self.top_k)
        return {c: np.stack([_top_mean(vectors @ seeds.T, self.top_k), benign], axis=1)
                for c, seeds in self.seeds.items() if len(seeds)}


_FIRST_EN = re.compile(r"(?i)\b(?:i|i'm|im|i've|i'll|i'd|me|my|myself|mine)\b")
_SECOND_EN = re.compile(r"(?i)\b(?:you|you're|youre|ur|u|your|yourself)\b")
SECOND_PERSON_SELF_HARM = 0.4


def _persons(text: str) -> tuple[bool, bool]:
    """(speaks of itself, speaks to someone): self-harm is said in the first person."""
    return bool(_FIRST_EN.search(text) or "我" in text), bool(_SECOND_EN.search(text) or "你" in text)


def _top_mean(sims: np.ndarray, k: int) -> np.ndarray:
    k = min(k, sims.shape[1])
    return np.sort(sims, axis=1)[:, -k:].mean(axis=1)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


class Moderator:
    def __init__(self, *, embeddings: bool = True, profanity: bool = True, thresholds: dict | None = None):
        self.thresholds = thresholds if thresholds is not None else _load_thresholds()
        self.lexicon = lexicon_patterns(CATEGORIES)
        self._profanity = None
        if profanity:
            try:
                from safety.profanity import ProfanityModel

                self._profanity = ProfanityModel().predict
            except ImportError:  # the check is skipped, and says so in `checks`
                self._profanity = None
        self.indexes: dict[str, SimilarityIndex] = {}
        if embeddings:
            from safety.embedding import E5Multilingual, MiniLMOnnx

            self.indexes["en"] = SimilarityIndex(MiniLMOnnx(), "en")
            self.indexes["zh"] = SimilarityIndex(E5Multilingual(), "zh")

    @property
    def checks(self) -> list[str]:
        return ["regex", "lexicon"] + (["profanity_model"] if self._profanity else []) + (
            ["embedding"] if self.indexes else [])

    # --- public API --------------------------------------------------------------
    def detect_language(self, text: str) -> str:
        return detect_language(text)

    def redact_pii(self, text: str) -> tuple[str, list[str]]:
        return pii.redact(text)

    def check(self, text: str, *, kind: str = "input", lang: str | None = None) -> list[Finding]:
        """The categories this text is flagged for (score >= 0.5), strongest first. Personal data
        and prompt injection come with their character span."""
        findings, scores = self._evaluate(text, kind, lang)
        flagged = [Finding(c, round(s, 4), source) for c, (s, source) in scores.items() if s >= FLAG_AT]
        return sorted(findings + flagged, key=lambda f: (-f.score, f.category))

    def scores(self, text: str, *, kind: str = "input", lang: str | None = None) -> dict[str, float]:
        """Every category's score in [0, 1], flagged or not (for precision/recall curves)."""
        findings, scores = self._evaluate(text, kind, lang)
        result = {c: 0.0 for c in CATEGORIES}
        for category, (score, _) in scores.items():
            result[category] = round(score, 4)
        for finding in findings:
            result[finding.category] = max(result[finding.category], finding.score)
        if kind == "output":
            result["prompt_injection"] = 0.0
        return result

    # --- the checks ----------------------------------------------------------------
    def _evaluate(self, text: str, kind: str, lang: str | None):
        """(span findings: pii and injection patterns, {category: (combined score, strongest source)})."""
        return self.combine(*self.signals(text, kind=kind, lang=lang), kind=kind)

    def signals(self, text: str, *, kind: str = "input", lang: str | None = None):
        """What each check saw, before thresholds: (span findings, {category: [(score, source)]},
        (embedding language, {category: array of (seed similarity, benign similarity) per window}))."""
        text = text or ""
        if not text.strip():
            return [], {}, None
        lang = lang or detect_language(text)
        spans: list[Finding] = [Finding("pii", 1.0, "regex", s.start, s.end) for s in pii.find_pii(text)]
        parts: dict[str, list[tuple[float, str]]] = {c: [] for c in EMBEDDED_CATEGORIES}
        has_cjk = bool(_CJK.search(text))
        has_latin = bool(_LATIN_WORD.search(text))
        if has_cjk:  # phrases, patterns and seeds are simplified (spans: OpenCC's t2s keeps the length)
            simplified = to_simplified(text)
            text = simplified if len(simplified) == len(text) else text
        if kind != "output":
            best = None
            for pattern in INJECTION:
                if (pattern.lang == "zh" and not has_cjk) or (pattern.lang == "en" and not has_latin):
                    continue
                match = pattern.regex.search(text)
                if match and (best is None or pattern.score > best.score):
                    best = Finding("prompt_injection", pattern.score, "regex", match.start(), match.end())
            if best is not None:
                parts["prompt_injection"].append((best.score, "regex"))
                if best.score >= FLAG_AT:
                    spans.append(best)
        for category in EMBEDDED_CATEGORIES:
            hits = [p.score for p in self.lexicon if p.category == category
                    and ((p.lang == "zh" and has_cjk) or (p.lang == "en" and has_latin)) and p.regex.search(text)]
            if hits:
                parts[category].append((max(hits), "lexicon"))
        if self._profanity is not None and has_latin and lang == "en":
            parts["harassment"].append((float(self._profanity([text[:4000]])[0]), "profanity_model"))
        embedded = None
        if self.indexes:
            index = self.indexes.get("zh" if has_cjk else "en") or next(iter(self.indexes.values()))
            embedded = (index.lang, index.raw(windows(text, index.lang)), _persons(text))
        return spans, parts, embedded

    def combine(self, spans, parts, embedded, *, kind: str = "input", thresholds: dict | None = None):
        thresholds = self.thresholds if thresholds is None else thresholds
        parts = {c: list(scored) for c, scored in parts.items()}
        weight = thresholds.get("profanity_weight", 0.75)
        for category, scored in parts.items():
            parts[category] = [(s * weight if source == "profanity_model" else s, source) for s, source in scored]
        if embedded is not None:
            lang, raw = embedded[0], embedded[1]
            first, second = embedded[2] if len(embedded) > 2 else (True, False)
            settings = thresholds.get("embedding", {}).get(lang, {})
            temperature = settings.get("temperature", 0.02)
            margin = settings.get("margin", 0.0)
            rival_slack = settings.get("rival_slack")
            for category, pairs in raw.items():
                threshold = settings.get(category, settings.get("default", 0.6))
                # both: close enough to the category's seeds, and closer to them than to any benign one
                margins = np.minimum(pairs[:, 0] - threshold, pairs[:, 0] - pairs[:, 1] - margin)
                if rival_slack is not None and len(raw) > 1:
                    # and not clearly closer to another category's seeds: e5 puts every unsafe text near
                    # every unsafe seed ("burn his house down" ~ self-harm seeds at 0.90), so without this the
                    # calibrated thresholds climb to keep categories apart, and recall falls
                    rival = np.max([other[:, 0] for c, other in raw.items() if c != category], axis=0)
                    margins = np.minimum(margins, pairs[:, 0] - rival + rival_slack)
                score = _sigmoid(float(margins.max()) / temperature)
                if category == "self_harm" and second and not first:
                    score *= SECOND_PERSON_SELF_HARM  # "everyone hates you" is aimed at someone else: harassment
                parts[category].append((score, "embedding"))
        combined: dict[str, tuple[float, str]] = {}
        for category, scored in parts.items():
            if not scored or (kind == "output" and category == "prompt_injection"):
                continue
            remaining = 1.0
            for score, _ in scored:
                remaining *= 1.0 - min(max(score, 0.0), 1.0)
            combined[category] = (1.0 - remaining, max(scored)[1])
        if any(f.category == "prompt_injection" for f in spans):
            combined.pop("prompt_injection", None)  # the pattern finding carries the span already
        return spans, combined


def _load_thresholds() -> dict:
    if THRESHOLDS_FILE.is_file():
        return yaml.safe_load(THRESHOLDS_FILE.read_text(encoding="utf-8")) or {}
    return {}


_MODERATOR: Moderator | None = None
_LOCK = threading.Lock()


def get_moderator() -> Moderator:
    """The process's moderator, loaded once (models and seed vectors)."""
    global _MODERATOR
    if _MODERATOR is None:
        with _LOCK:
            if _MODERATOR is None:
                _MODERATOR = Moderator()
    return _MODERATOR
