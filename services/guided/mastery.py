"""Mastery estimates: Bayesian knowledge tracing (BKT), one estimate per skill.

Why BKT and not Elo: a guided turn gives one binary observation (right or wrong) on one skill, with no
calibrated item difficulties to rate against (MathDial problems, free writing tasks); BKT turns exactly
that into a probability the skill is mastered, with four interpretable parameters, and a teacher's
correction is simply a new prior. Elo needs item ratings we do not have.

Two deliberate choices (docs/guided.md):
- Help makes a correct answer weaker evidence: the guess probability grows with the hint level shown.
- The learning transition P(T) is credited only on a correct answer, so an estimate never rises after a
  wrong one (plain BKT can, at low mastery, because it adds P(T) after every opportunity)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BKTParams:
    p_init: float = 0.3  # prior mastery of a skill never seen
    p_learn: float = 0.15  # P(T): learning from a successful opportunity
    p_slip: float = 0.1  # P(S): wrong although mastered
    p_guess: float = 0.2  # P(G): right although not mastered (unaided)
    guess_per_hint_level: float = 0.1  # each hint level shown adds this to P(G)
    max_guess: float = 0.6


DEFAULT_PARAMS = BKTParams()


def clamp(p: float) -> float:
    return min(0.999, max(0.001, p))


def bkt_update(p: float, correct: bool, hint_level: int = 0, params: BKTParams = DEFAULT_PARAMS) -> float:
    """The mastery estimate after one observed answer."""
    p = clamp(p)
    guess = min(params.max_guess, params.p_guess + params.guess_per_hint_level * max(0, hint_level))
    slip = params.p_slip
    if correct:
        posterior = p * (1 - slip) / (p * (1 - slip) + (1 - p) * guess)
        return round(clamp(posterior + (1 - posterior) * params.p_learn), 4)
    posterior = p * slip / (p * slip + (1 - p) * (1 - guess))
    return round(clamp(posterior), 4)
