"""The retrieval bench's metric functions against hand-computed cases."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_retrieval import ndcg_at_k, percentile, recall_at_k  # noqa: E402


def test_ndcg_of_a_perfect_ranking_is_one():
    assert ndcg_at_k(["a", "b", "x"], {"a": 1, "b": 1}) == pytest.approx(1.0)


def test_ndcg_with_the_relevant_document_second():
    # one relevant doc at rank 2: DCG = 1/log2(3), IDCG = 1/log2(2) = 1
    assert ndcg_at_k(["x", "a"], {"a": 1}) == pytest.approx(1 / math.log2(3))


def test_ndcg_with_graded_gains_and_a_miss():
    # ranked: b (gain 1) at 1, a (gain 2) at 3; ideal: a then b
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["b", "x", "a"], {"a": 2, "b": 1}) == pytest.approx(dcg / idcg)


def test_ndcg_cuts_at_k_and_handles_no_relevant():
    assert ndcg_at_k(["x"] * 10 + ["a"], {"a": 1}, k=10) == 0.0
    assert ndcg_at_k(["a"], {}) == 0.0


def test_recall_counts_distinct_relevant_documents_in_the_top_k():
    assert recall_at_k(["a", "x", "b"], {"a": 1, "b": 1, "c": 1}, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c"], {"a": 1, "b": 1, "c": 0}) == 1.0


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.99) == 99 and percentile(values, 0.5) == 51 and percentile([7.0], 0.99) == 7.0
