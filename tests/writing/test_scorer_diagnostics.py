"""Unit tests for the scorer's evaluation arithmetic: QWK against scikit-learn, and the cross-prompt diagnostic
(`train_scorer --diagnose`) on synthetic prompts whose ranking is known and whose mean score differs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from services.writing.scorer import FEATURES, prior_sd
from services.writing.train_scorer import RANGES, _with_prior, denorm, diagnose, diagnose_md, fit_bundle, qwk


def test_qwk_matches_scikit_learn():
    rng = np.random.default_rng(1)
    for lo, hi in ((0, 3), (1, 6), (2, 12)):
        a = rng.integers(lo, hi + 1, 300)
        b = np.clip(a + rng.integers(-2, 3, 300), lo, hi)
        expected = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(lo, hi + 1)))
        assert qwk(a, b, lo, hi) == pytest.approx(expected, abs=1e-9)


def _synthetic(seed: int = 0):
    """Three prompts (ranges 0-3, 1-6, 0-4): the score follows feature 0 within each prompt; prompt 5's raters are
    much more lenient (mean 0.85 of the scale against 0.45), which no feature shows."""
    rng = np.random.default_rng(seed)
    xs, ys, ps = [], [], []
    for p, level in ((3, 0.45), (2, 0.45), (5, 0.85)):
        n = 240
        x = rng.normal(size=(n, len(FEATURES)))
        y = np.clip(level + 0.12 * x[:, 0] + 0.03 * rng.normal(size=n), 0, 1)
        xs.append(x), ys.append(y), ps.append(np.full(n, p))
    x, y, prompts = np.vstack(xs), np.concatenate(ys), np.concatenate(ps)
    gold = np.concatenate([denorm(y[prompts == p], p) for p in (3, 2, 5)])
    lo, hi = np.array([RANGES[p][0] for p in prompts]), np.array([RANGES[p][1] for p in prompts])
    return x, (gold - lo) / (hi - lo), prompts, gold


def test_with_prior_replaces_mean_and_spread_only():
    x, y, prompts, _ = _synthetic()
    bundle = fit_bundle(x[prompts != 5], y[prompts != 5], prompts[prompts != 5], "cp2-wide")
    changed = _with_prior(bundle, mean=0.8, sd=0.2)
    assert changed["prior_mean"] == 0.8 and prior_sd(changed["sd_law"], 4) == pytest.approx(0.2)
    assert prior_sd(changed["sd_law"], 60) == pytest.approx(0.2)  # whatever the scale
    assert bundle["prior_mean"] != 0.8 and changed["relative_gbm"] is bundle["relative_gbm"]
    assert _with_prior(bundle, sd=0.2)["prior_mean"] == bundle["prior_mean"]


def test_diagnose_separates_ranking_from_the_unknown_mean():
    x, y, prompts, gold = _synthetic()
    d = diagnose(x, y, prompts, gold, "cp2-wide")
    assert set(d) == {2, 3, 5}
    for p in d:
        assert d[p]["spearman"] > 0.8  # feature 0 ranks every prompt, whichever prompts trained the model
    # Prompt 5's level is unknowable from the other two: the prior misses it by ~0.4 and the true mean fixes it.
    prior = np.mean([y[prompts == p].mean() for p in (2, 3)])
    assert d[5]["mean_error"] == pytest.approx(y[prompts == 5].mean() - prior)
    assert d[5]["mean_error"] > 0.3
    assert d[5]["true_mean"] > d[5]["streamed"] + 0.2
    assert d[5]["true_both"] > d[5]["streamed"] + 0.2
    md = diagnose_md(d, "cp2-wide", len(y), 1.0)
    assert md.count("\n| ") >= 5 and "rms" in md and "| 5 | 0-4 |" in md
