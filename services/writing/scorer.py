"""The calibrated essay scorer: prompt-independent features + gradient-boosted regressors trained on human scores.

Holistic model: trained on ASAP prompts 1-6 and 8 with each prompt's score normalised to [0, 1] over its official
range, so it predicts a prompt-free quality in [0, 1] that maps onto any scale. Trait models: trained on prompt 8's
six trait scores (ideas, organization, voice, word choice, sentence fluency, conventions; scale 1-6) as residuals
from the holistic score, so a trait is "holistic quality, shifted by what this trait model sees", anchored on the
cross-prompt holistic model. No network, no LLM; the artifact is one small pickle (services/writing/models/).
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from services.writing.metrics import EN_STOPWORDS, Analysis, analyse, summary_numbers

DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "scorer.pkl"
TRAITS = ("ideas", "organization", "voice", "word_choice", "fluency", "conventions")

FEATURES = ("log_words", "log_sentences", "log_paragraphs", "sent_len_mean", "sent_len_std", "word_len_mean", "mtld",
            "ttr", "log_unique", "repetition_rate", "spelling_rate", "grammar_rate", "transitions_per_sent",
            "transitions_distinct", "citations", "words_per_paragraph",
            "long_word_ratio", "stopword_ratio", "commas_per_sent", "log_long_unique", "punct_variety",
            "question_ratio", "exclaim_ratio", "first_person_ratio")


def feature_dict(text: str, analysis: Analysis | None = None) -> dict[str, float]:
    a = analysis or analyse(text, suggestions=False)
    f = summary_numbers(a)
    tokens = [w.lower() for _, _, w in a.words]
    n = max(1, len(tokens))
    sents = max(1, a.metrics["sentences"])
    if a.language == "zh":
        long_words = [t for t in tokens if len(t) >= 3]
        stop = sum(1 for t in tokens if t in ("的", "了", "是", "在", "和", "也", "就", "都", "我", "你", "他"))
        first = sum(1 for t in tokens if t in ("我", "我们"))
        commas = text.count("，") + text.count(",")
        questions, exclaims = text.count("？") + text.count("?"), text.count("！") + text.count("!")
    else:
        long_words = [t for t in tokens if len(t) >= 7]
        stop = sum(1 for t in tokens if t in EN_STOPWORDS)
        first = sum(1 for t in tokens if t in ("i", "me", "my", "we", "us", "our"))
        commas = text.count(",")
        questions, exclaims = text.count("?"), text.count("!")
    f.update(
        long_word_ratio=len(long_words) / n, stopword_ratio=stop / n, commas_per_sent=commas / sents,
        log_long_unique=math.log1p(len(set(long_words))),
        punct_variety=len(set(re.findall(r"[,;:()\"'\-—–，；：（）“”]", text))),
        question_ratio=questions / sents, exclaim_ratio=exclaims / sents, first_person_ratio=first / n,
    )
    return f


def feature_vector(text: str, analysis: Analysis | None = None) -> np.ndarray:
    f = feature_dict(text, analysis)
    return np.array([f[name] for name in FEATURES], dtype=np.float64)


def make_regressor(seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
                                         l2_regularization=1.0, random_state=seed)


@dataclass
class Prediction:
    holistic: float  # [0, 1]
    traits: dict[str, float]  # [0, 1] each


class Scorer:
    """Loads the pickled models; predict() is pure and thread-safe."""

    def __init__(self, path: Path | str = DEFAULT_MODEL_PATH):
        with open(path, "rb") as fh:
            bundle = pickle.load(fh)  # our own artifact, written by train_scorer.py
        if bundle.get("features") != list(FEATURES):
            raise ValueError(f"{path}: trained on other features; retrain with python -m services.writing.train_scorer")
        self.version = bundle["version"]
        self.holistic = bundle["holistic"]
        self.traits = bundle["traits"]
        self.info = bundle.get("info", {})

    def predict(self, text: str, analysis: Analysis | None = None) -> Prediction:
        x = feature_vector(text, analysis).reshape(1, -1)
        # One row: OpenMP threads only add contention (seconds on a busy 2-core box instead of milliseconds).
        with threadpool_limits(1):
            return self._predict(x)

    def _predict(self, x: np.ndarray) -> Prediction:
        holistic = float(np.clip(self.holistic.predict(x)[0], 0.0, 1.0))
        traits = {name: float(np.clip(holistic + model.predict(x)[0], 0.0, 1.0)) for name, model in self.traits.items()}
        return Prediction(holistic=holistic, traits=traits)


def to_scale(value: float, lo: float, hi: float, step: float | None = 1.0) -> float:
    """[0, 1] -> [lo, hi], rounded to the scale's step (None = keep one decimal)."""
    raw = lo + float(np.clip(value, 0, 1)) * (hi - lo)
    if step:
        raw = lo + math.floor((raw - lo) / step + 0.5) * step  # half up
        return float(min(hi, max(lo, round(raw, 6))))
    return round(raw, 1)
