"""The hybrid fusions against hand-computed cases, and z-score fusion in the retriever."""

import numpy as np
import pytest

from graphrag.dense import HashingEmbedder
from graphrag.fusion import reciprocal_rank_fusion, weighted_score_fusion, zscore_fusion, zscore_normalize
from graphrag.index_store import load_index
from graphrag.retriever import RetrievalConfig, Retriever


def test_zscore_over_all_values():
    # mean 2, population std sqrt(2/3)
    z = zscore_normalize(np.array([1.0, 2.0, 3.0]))
    assert z == pytest.approx([-1.224745, 0.0, 1.224745], abs=1e-6)


def test_zscore_only_over_the_rows_a_leg_scores_and_the_rest_at_its_floor():
    # rows 1 and 3 have no vector (-1 is a placeholder, not a score): stats over rows 0, 2, 4
    values = np.array([0.2, -1.0, 0.4, -1.0, 0.6])
    z = zscore_normalize(values, np.array([0, 2, 4]))
    assert z[[0, 2, 4]] == pytest.approx([-1.224745, 0.0, 1.224745], abs=1e-6)
    assert z[1] == z[3] == pytest.approx(-1.224745, abs=1e-6)


def test_zscore_of_a_constant_leg_is_zero():
    assert zscore_normalize(np.array([5.0, 5.0])).tolist() == [0.0, 0.0]


def test_zscore_fusion_sums_weighted_z_at_every_candidate():
    normalized = {"keyword": np.array([1.0, -1.0, 0.0]), "dense": np.array([-0.5, 2.0, 0.5])}
    fused = zscore_fusion(normalized, {"keyword": 0.25, "dense": 2.0}, [0, 1])
    assert fused == pytest.approx({0: 0.25 - 1.0, 1: -0.25 + 4.0})


def test_weighted_and_rrf_by_hand():
    fused = weighted_score_fusion({"a": {0: 1.0, 1: 3.0}, "b": {1: 2.0, 2: 4.0}}, {"a": 1.0, "b": 0.5})
    assert fused == pytest.approx({0: 0.0, 1: 1.0, 2: 0.5})
    rrf = reciprocal_rank_fusion({"a": [0, 1], "b": [1]}, {"a": 1.0, "b": 2.0}, k=60)
    assert rrf == pytest.approx({0: 1 / 61, 1: 1 / 62 + 2 / 61})


def test_zscore_fusion_in_the_retriever_uses_every_legs_score_and_the_path_filter(built):
    _, index_path, _ = built
    index = load_index(index_path)
    config = RetrievalConfig(fusion="zscore", hybrid_weights={"keyword": 0.25, "graph": 0.0, "dense": 2.0})
    retriever = Retriever(index, HashingEmbedder(), config)
    query = "Which citation style uses author-date?"
    hits = retriever.search(query, 3, "hybrid")
    assert index.chunks[hits[0].chunk_index].path == "english/citations.html"
    # the fused score is the weighted sum of the legs' z-scores over all chunks
    signals, candidates, coverage, _ = retriever.signals(query)
    z = {name: zscore_normalize(signals[name]) for name in ("keyword", "dense")}
    top = hits[0].chunk_index
    assert hits[0].score == pytest.approx(0.25 * z["keyword"][top] + 2.0 * coverage["dense"] * z["dense"][top])
    filtered = retriever.search("citation", 10, "hybrid", paths=["*.html"])
    assert filtered and all(index.chunks[h.chunk_index].path.endswith(".html") for h in filtered)
