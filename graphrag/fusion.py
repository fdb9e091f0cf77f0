"""Combining ranked lists from several retrievers."""

from __future__ import annotations

import numpy as np

RRF_K = 60


def reciprocal_rank_fusion(rankings: dict[str, list[int]], weights: dict[str, float] | None = None,
                           k: int = RRF_K) -> dict[int, float]:
    """score(d) = sum over retrievers of weight / (k + rank). Rank-based, so it needs no score calibration."""
    fused: dict[int, float] = {}
    for name, ranking in rankings.items():
        weight = (weights or {}).get(name, 1.0)
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


def weighted_score_fusion(scores: dict[str, dict[int, float]], weights: dict[str, float]) -> dict[int, float]:
    """Each retriever's scores are min-max normalized over its own candidates, then summed with
    weights; a candidate a retriever did not return counts 0 there."""
    fused: dict[int, float] = {}
    for name, by_item in scores.items():
        if not by_item:
            continue
        values = np.fromiter(by_item.values(), dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        span = high - low if high > low else 1.0
        weight = weights.get(name, 1.0)
        for item, score in by_item.items():
            fused[item] = fused.get(item, 0.0) + weight * (score - low) / span
    return fused


def top_items(scores: dict[int, float], k: int) -> list[int]:
    return [item for item, _ in sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]]
