"""Bradley-Terry ratings with confidence intervals (maximum likelihood with scipy's optimiser).

P(i beats j) = 1 / (1 + exp(-(theta_i - theta_j))). A tie counts as half a win for each side
(both_bad is a tie). A weak Gaussian prior (sigma = `prior_sd` in logits) keeps the fit finite
when a model has only wins or only losses; with prior_sd=None the fit is the plain MLE with
theta's mean fixed at 0. Standard errors come from the inverse Hessian (observed Fisher
information) of the negative log posterior; 95% intervals = theta +/- 1.96 SE. Ratings are
reported on the Elo scale: 1000 + theta * 400 / ln(10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

ELO_SCALE = 400.0 / math.log(10.0)
Z95 = 1.959963984540054


@dataclass
class Rating:
    model: str
    theta: float
    se: float
    rating: float
    ci_low: float
    ci_high: float
    wins: float
    games: int


def _tables(comparisons: list[tuple[str, str, float]]):
    models = sorted({m for a, b, _ in comparisons for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    wins = np.zeros((n, n))  # wins[i, j]: i's (fractional) wins over j
    for a, b, score in comparisons:
        i, j = index[a], index[b]
        wins[i, j] += score
        wins[j, i] += 1.0 - score
    return models, wins


def fit(comparisons: list[tuple[str, str, float]], prior_sd: float | None = 10.0) -> list[Rating]:
    """comparisons: (model_a, model_b, score of a: 1 win, 0.5 tie, 0 loss). Best first."""
    comparisons = [(a, b, s) for a, b, s in comparisons if a != b]
    if not comparisons:
        return []
    models, wins = _tables(comparisons)
    n = len(models)
    games = wins + wins.T
    prior = 0.0 if prior_sd is None else 1.0 / prior_sd ** 2

    def objective(theta):
        diff = theta[:, None] - theta[None, :]
        # -sum wins_ij * log sigmoid(theta_i - theta_j)
        nll = np.sum(wins * np.logaddexp(0.0, -diff))
        p = 1.0 / (1.0 + np.exp(-diff))
        grad = -np.sum(wins * (1.0 - p), axis=1) + np.sum(wins.T * (1.0 - p.T), axis=1)
        # anchor: mean 0 (soft, exact at the optimum) plus the prior
        nll += 0.5 * prior * np.sum(theta ** 2) + 0.5 * np.sum(theta) ** 2
        grad = grad + prior * theta + np.sum(theta)
        return nll, grad

    result = minimize(objective, np.zeros(n), jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-15})
    theta = result.x - result.x.mean()
    # Hessian of the NLL: H_ii = sum_j n_ij p_ij (1-p_ij), H_ij = -n_ij p_ij (1-p_ij)
    diff = theta[:, None] - theta[None, :]
    p = 1.0 / (1.0 + np.exp(-diff))
    w = games * p * (1.0 - p)
    hessian = -w
    np.fill_diagonal(hessian, w.sum(axis=1))
    hessian += prior * np.eye(n)
    # Ratings are only defined up to a common shift: project that direction out (mean-zero anchor).
    projector = np.eye(n) - np.ones((n, n)) / n
    cov = projector @ np.linalg.pinv(hessian) @ projector
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ratings = []
    for i, model in enumerate(models):
        r = 1000.0 + ELO_SCALE * theta[i]
        half = Z95 * ELO_SCALE * se[i]
        ratings.append(Rating(model=model, theta=float(theta[i]), se=float(se[i]), rating=round(float(r), 1),
                              ci_low=round(float(r - half), 1), ci_high=round(float(r + half), 1),
                              wins=float(wins[i].sum()), games=int(round(games[i].sum()))))
    ratings.sort(key=lambda x: -x.theta)
    return ratings


VOTE_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def comparisons_from_votes(votes: list[dict]) -> list[tuple[str, str, float]]:
    return [(v["model_a"], v["model_b"], VOTE_SCORE[v["vote"]]) for v in votes
            if v.get("vote") in VOTE_SCORE and v.get("model_a") and v.get("model_b")]
