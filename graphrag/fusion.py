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


def zscore_normalize(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """One leg's scores as z-scores over every chunk that the leg scores (`valid`: their row
    numbers; default all), not only over its top candidates: a query's whole score distribution
    calibrates the leg (a cosine of 0.8 means little where most chunks score 0.75). Rows outside
    `valid` get the lowest z of the valid ones (like a candidate a leg did not return in
    weighted_score_fusion, which counts as that leg's minimum)."""
    values = np.asarray(values, dtype=np.float64)
    pool = values if valid is None else values[valid]
    out = np.zeros_like(values)
    if pool.size == 0:
        return out
    mean, std = float(pool.mean()), float(pool.std())
    z = (pool - mean) / (std if std > 0 else 1.0)
    if valid is None:
        return z
    out[:] = float(z.min())
    out[valid] = z
    return out


def zscore_fusion(normalized: dict[str, np.ndarray], weights: dict[str, float], items) -> dict[int, float]:
    """Weighted sum of z-normalised leg scores (zscore_normalize) for the candidate `items`
    (the union of the legs' candidates); every leg contributes its score for every item,
    also for items it did not rank among its own candidates."""
    fused: dict[int, float] = {}
    for item in items:
        fused[item] = float(sum(weights.get(name, 1.0) * z[item] for name, z in normalized.items()))
    return fused


def top_items(scores: dict[int, float], k: int) -> list[int]:
    return [item for item, _ in sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]]
