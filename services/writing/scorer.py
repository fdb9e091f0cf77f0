"""The calibrated essay scorer: prompt-independent features + learned regressors trained on human scores.

Two holistic models, both trained on ASAP prompts 1-6 and 8 (scores normalised to [0, 1] over each prompt's range):

* absolute (cold start): gradient-boosted trees on the raw features -> a prompt-free quality in [0, 1]. Used when
  the essay's assignment is unknown or fewer than `min_essays` essays of it have been seen.
* relative (per-assignment calibration): the service keeps running feature statistics per assignment (count, sum,
  sum of squares in Redis; services/writing/store.py). Features standardised within the assignment (z) say how
  this essay compares with its classmates' essays on the same task: "long" means long *for this assignment*. A
  gradient-boosted model on [raw, z] and a ridge on z predict the essay's within-assignment z-score of the human
  score; that is mapped to [0, 1] with a prior mean and a prior spread that depends on the number of scale points
  (raters use less of a wide scale: fitted on the training prompts, clipped to the range they span or a wider one,
  and widened by the spread of the training prompts' means, because the new assignment's mean is unknown: see
  prior_sd). The two are blended, w = n / (n + k), so the calibration fades in as the assignment's essays arrive;
  while few essays have been seen, each feature's variance is shrunk towards the training prompts' average
  within-prompt variance. Which recipe (train_scorer.RECIPES: the relative models also trained on class-sized
  running statistics or not; the spread's clip and widening) ships is chosen by leave-one-prompt-out on the
  training prompts (docs/writing.md).

Trait models: trained on prompt 8's six trait scores (ideas, organization, voice, word choice, sentence fluency,
conventions; scale 1-6) as residuals from the holistic score, so a trait is "holistic quality, shifted by what
this trait model sees". No network, no LLM; the artifact is one small pickle (services/writing/models/), written
by `python -m services.writing.train_scorer`.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, field
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


Z_CLIP = 5.0


def make_regressor(seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
                                         l2_regularization=1.0, random_state=seed)


def make_ridge():
    from sklearn.linear_model import Ridge

    return Ridge(alpha=10.0)


@dataclass
class AssignmentStats:
    """Running feature statistics of one assignment's essays (count, sums, sums of squares)."""

    n: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES)))
    sumsq: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES)))

    def add(self, x: np.ndarray) -> None:
        self.n += 1
        self.sums = self.sums + x
        self.sumsq = self.sumsq + x * x

    @property
    def mean(self) -> np.ndarray:
        return self.sums / max(1, self.n)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.sumsq / max(1, self.n) - self.mean ** 2, 0.0))


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Within-assignment z-scores, clipped (a feature constant so far gives 0, not a huge value)."""
    safe = np.where(std > 1e-6, std, 1.0)
    z = np.where(std > 1e-6, (x - mean) / safe, 0.0)
    return np.clip(z, -Z_CLIP, Z_CLIP)


def prior_sd(law: dict, points: float | None) -> float:
    """Spread to map a new assignment's predicted z onto [0, 1]: the spread of normalised human scores expected on
    a scale with `points` steps, exp(a + b log points) clipped to [lo, hi], widened by `inflate_var` (the variance
    of the training prompts' mean scores: the new assignment's mean is not known, and QWK ~ 2·s·r·σ / (s² + σ² +
    d²) for a mean off by d is highest at s = sqrt(σ² + d²), so the expected d² is added)."""
    if not points or points <= 0:
        sd = law["default"]
    else:
        sd = float(np.clip(math.exp(law["a"] + law["b"] * math.log(points)), law["lo"], law["hi"]))
    return float(math.sqrt(sd * sd + law.get("inflate_var", 0.0)))


@dataclass
class Prediction:
    holistic: float  # [0, 1]
    traits: dict[str, float]  # [0, 1] each
    calibration: str = "absolute"  # absolute | assignment
    essays_seen: int = 0
    absolute: float = 0.0  # the cold-start estimate, for logs and tests
    unanchored: float = 0.0  # the holistic score before the teacher anchors' offset (residuals are taken from it)
    anchor_offset: float = 0.0  # the offset the assignment's teacher anchors added (0: none)


def anchor_offset(m: int, residual_sum: float, k0: float) -> float:
    """The assignment's level shift from m teacher anchors: the mean residual (teacher's normalised score minus the
    model's normalised prediction), shrunk towards 0 as if k0 anchors with residual 0 had been seen:
    sum / (m + k0). No anchors (or a degenerate m + k0) -> 0. Clipped to [-1, 1]."""
    if m <= 0 or m + k0 <= 0:
        return 0.0
    return float(np.clip(residual_sum / (m + k0), -1.0, 1.0))


class Scorer:
    """Loads the pickled models; predict() is pure and thread-safe."""

    def __init__(self, path: Path | str = DEFAULT_MODEL_PATH):
        with open(path, "rb") as fh:
            bundle = pickle.load(fh)  # our own artifact, written by train_scorer.py
        if bundle.get("features") != list(FEATURES) or "prior_var" not in bundle:
            raise ValueError(f"{path}: trained on other features; retrain with python -m services.writing.train_scorer")
        self.version = bundle["version"]
        self.bundle = bundle
        self.holistic = bundle["absolute"]
        self.traits = bundle["traits"]
        self.info = bundle.get("info", {})
        self.min_essays = int(bundle["calibration"]["min_essays"])
        self.blend_k = float(bundle["calibration"]["k"])

    def features(self, text: str, analysis: Analysis | None = None) -> np.ndarray:
        return feature_vector(text, analysis)

    def predict(self, text: str, analysis: Analysis | None = None, stats: AssignmentStats | None = None,
                points: float | None = None, offset: float = 0.0) -> Prediction:
        """`stats`: the assignment's essays seen before this one (None = unknown assignment); `points`: the number
        of steps on the target scale ((max - min) / step), which sets the prior spread."""
        x = self.features(text, analysis)
        return self.predict_vector(x, stats, points, offset)

    def predict_vector(self, x: np.ndarray, stats: AssignmentStats | None = None,
                       points: float | None = None, offset: float = 0.0) -> Prediction:
        """`offset`: the teacher anchors' shift of the normalised score (anchor_offset); the holistic score and,
        through it, every trait move by it (clipped to [0, 1])."""
        # One row: OpenMP threads only add contention (seconds on a busy 2-core box instead of milliseconds).
        with threadpool_limits(1):
            h, n = self.holistic_batch(x.reshape(1, -1), stats_rows(stats, 1), points)
            absolute = float(np.clip(self.holistic.predict(x.reshape(1, -1))[0], 0.0, 1.0))
            unanchored = float(h[0])
            holistic = float(np.clip(unanchored + offset, 0.0, 1.0))
            traits = {name: float(np.clip(holistic + model.predict(x.reshape(1, -1))[0], 0.0, 1.0))
                      for name, model in self.traits.items()}
        mode = "assignment" if n[0] >= self.min_essays else "absolute"
        return Prediction(holistic=holistic, traits=traits, calibration=mode, essays_seen=int(n[0]), absolute=absolute,
                          unanchored=unanchored, anchor_offset=float(offset))

    def holistic_batch(self, x: np.ndarray, stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                       points: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised holistic [0, 1] for rows x with per-row assignment stats (n, mean, std) or None."""
        return holistic_from(self.bundle, x, stats, points)


def stats_rows(stats: AssignmentStats | None, rows: int):
    if stats is None:
        return None
    return (np.full(rows, stats.n), np.tile(stats.mean, (rows, 1)), np.tile(stats.std, (rows, 1)))


def relative_z(bundle: dict, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Predicted within-assignment z-score of the human score (unit spread on the training prompts)."""
    g = bundle["relative_gbm"].predict(np.hstack([x, z])) / bundle["relative_sd"][0]
    r = bundle["relative_ridge"].predict(z) / bundle["relative_sd"][1]
    return 0.5 * g + 0.5 * r


def holistic_from(bundle: dict, x: np.ndarray, stats, points: float | None) -> tuple[np.ndarray, np.ndarray]:
    absolute = np.clip(bundle["absolute"].predict(x), 0.0, 1.0)
    if stats is None:
        return absolute, np.zeros(len(x), dtype=int)
    n, mean, std = stats
    cal = bundle["calibration"]
    warm = n >= cal["min_essays"]
    out = absolute.copy()
    if warm.any():
        # A few essays give a noisy spread: shrink each feature's variance towards the training prompts' average
        # within-prompt variance, as if var_k essays with that variance had been seen.
        nn = np.asarray(n[warm], dtype=float)[:, None]
        var = (nn * std[warm] ** 2 + cal["var_k"] * bundle["prior_var"]) / (nn + cal["var_k"])
        z = standardise(x[warm], mean[warm], np.sqrt(var))
        rel = bundle["prior_mean"] + prior_sd(bundle["sd_law"], points) * relative_z(bundle, x[warm], z)
        w = n[warm] / (n[warm] + cal["k"])
        out[warm] = np.clip((1 - w) * absolute[warm] + w * np.clip(rel, 0.0, 1.0), 0.0, 1.0)
    return out, np.asarray(n)


def to_scale(value: float, lo: float, hi: float, step: float | None = 1.0) -> float:
    """[0, 1] -> [lo, hi], rounded to the scale's step (None = keep one decimal)."""
    raw = lo + float(np.clip(value, 0, 1)) * (hi - lo)
    if step:
        raw = lo + math.floor((raw - lo) / step + 0.5) * step  # half up
        return float(min(hi, max(lo, round(raw, 6))))
    return round(raw, 1)
