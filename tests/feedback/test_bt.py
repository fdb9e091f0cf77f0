"""Bradley-Terry fit against known cases."""

import math
import random

from services.feedback.bt import ELO_SCALE, comparisons_from_votes, fit


def test_two_players_closed_form():
    # A beats B 75 times in 100: the MLE strength gap is ln(75/25) = ln 3, SE of the gap 1/sqrt(n p (1-p)).
    ratings = fit([("A", "B", 1.0)] * 75 + [("A", "B", 0.0)] * 25, prior_sd=None)
    a, b = ratings
    assert (a.model, b.model) == ("A", "B")
    assert math.isclose(a.theta - b.theta, math.log(3), rel_tol=1e-4)
    # each strength is +/- gap/2 around 0, so its SE is half the gap's SE
    assert math.isclose(a.se, 0.5 / math.sqrt(100 * 0.75 * 0.25), rel_tol=1e-3)
    assert math.isclose(a.rating - b.rating, ELO_SCALE * math.log(3), abs_tol=0.2)
    assert a.ci_low < a.rating < a.ci_high and a.games == 100 and a.wins == 75


def test_ties_count_half():
    ratings = fit([("A", "B", 0.5)] * 10 + [("A", "B", 1.0)] * 10, prior_sd=None)  # 15 of 20 for A
    assert math.isclose(ratings[0].theta - ratings[1].theta, math.log(3), rel_tol=1e-4)


def test_recovers_known_strengths_within_intervals():
    truth = {"base": 0.0, "peer-v1": 0.7, "peer-v2": 1.4, "peer-v3": -0.5}
    rng = random.Random(7)
    names = list(truth)
    games = []
    for _ in range(4000):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + math.exp(-(truth[a] - truth[b])))
        games.append((a, b, 1.0 if rng.random() < p else 0.0))
    ratings = {r.model: r for r in fit(games)}
    mean = sum(truth.values()) / len(truth)
    assert [r.model for r in sorted(ratings.values(), key=lambda r: -r.theta)] == ["peer-v2", "peer-v1", "base",
                                                                                   "peer-v3"]
    for name, value in truth.items():
        r = ratings[name]
        assert abs(r.theta - (value - mean)) < 3 * r.se, (name, r)
        assert r.se < 0.08


def test_undefeated_model_stays_finite_with_the_prior():
    ratings = fit([("A", "B", 1.0)] * 5)
    assert all(math.isfinite(r.theta) and math.isfinite(r.se) for r in ratings)
    assert ratings[0].model == "A" and ratings[0].ci_low < ratings[0].rating


def test_votes_to_comparisons():
    votes = [{"model_a": "x", "model_b": "y", "vote": v} for v in ("a", "b", "tie", "both_bad", "up")]
    assert comparisons_from_votes(votes) == [("x", "y", 1.0), ("x", "y", 0.0), ("x", "y", 0.5), ("x", "y", 0.5)]
    assert fit([]) == []
