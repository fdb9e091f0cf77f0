"""A dense leg's own fitted weight (e5 behind dense_multi, bge-small behind dense_en): loaded from
the weights file, written by the bench's --fit, used per query language, "dense" the fallback."""

import json
import sys
from pathlib import Path

from graphrag.retriever import WEIGHTS_FILE, RetrievalConfig, Retriever
from tests.graphrag.test_graphrag_language import _legs_retriever

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_retrieval import LEG_GRID, leg_providers_to_fit, write_weights  # noqa: E402

CHINESE_QUERY = "中心论点在哪里提出"


def _with(retriever: Retriever, leg_weights: dict[str, float], dense: float = 1.0) -> Retriever:
    retriever.config = RetrievalConfig(fusion="zscore", hybrid_weights={"keyword": 1.0, "graph": 0.0, "dense": dense},
                                       leg_weights=leg_weights)
    return retriever


def test_a_leg_uses_its_own_weight_and_the_dense_weight_otherwise(built):
    retriever, _, _ = _legs_retriever(built, english_only=False)
    _with(retriever, {"dense_multi": 0.25}, dense=2.0)
    candidates = {"keyword": [0], "graph": [0], "dense_en": [1], "dense_multi": [2]}
    assert retriever.leg_weights(candidates, {"dense_multi": 1.0}) == {"keyword": 1.0, "dense_multi": 0.25}
    assert retriever.leg_weights(candidates, {"dense_en": 1.0}) == {"keyword": 1.0, "dense_en": 2.0}
    mixed = retriever.leg_weights(candidates, {"dense_en": 0.5, "dense_multi": 0.5})
    assert mixed == {"keyword": 1.0, "dense_en": 1.0, "dense_multi": 0.125}
    # explicit weights without a leg's name (the fit's grid) give every dense leg the "dense" weight
    assert retriever.leg_weights(candidates, {"dense_multi": 1.0}, {"keyword": 1.0, "dense": 3.0}) == \
        {"keyword": 1.0, "dense_multi": 3.0}


def test_the_chinese_leg_weight_decides_a_chinese_query_and_leaves_english_alone(built):
    retriever, chinese, _ = _legs_retriever(built, english_only=False)
    keyword_first = retriever.search(CHINESE_QUERY, 1, "keyword")[0].chunk_index
    assert keyword_first != chinese[-1]  # the fake multilingual leg prefers another chunk

    heavy, heavy_legs = _with(retriever, {"dense_multi": 50.0}).search_with_legs(CHINESE_QUERY, 3, "hybrid")
    assert heavy[0].chunk_index == chinese[-1] and heavy_legs == ["bm25", "graph", "dense"]

    off, off_legs = _with(retriever, {"dense_multi": 0.0}).search_with_legs(CHINESE_QUERY, 3, "hybrid")
    assert off[0].chunk_index == keyword_first and off_legs == ["bm25", "graph"]

    english = "Where is the thesis stated?"
    assert [h.chunk_index for h in _with(retriever, {"dense_multi": 50.0}).search(english, 4, "hybrid")] == \
        [h.chunk_index for h in _with(retriever, {"dense_multi": 0.0}).search(english, 4, "hybrid")]


def test_leg_weights_come_from_the_weights_file_that_the_fit_writes(tmp_path):
    path = tmp_path / "weights.json"
    fitted = {"best": (0.77, "zscore", {"keyword": 0.25, "graph": 0.0, "dense": 2.0}),
              "top5": [(0.77, "zscore", {"keyword": 0.25, "graph": 0.0, "dense": 2.0})], "points": 1}
    grid = [(0.70 + i / 1000, "zscore", {"keyword": 0.25, "graph": 0.0, "dense": d}) for i, d in enumerate(LEG_GRID)]
    leg_fit = {"best": max(grid, key=lambda r: r[0]), "all": grid, "build_seconds": 1.0, "dense_only": 0.6}
    write_weights(path, fitted, "a_corpus", 10, "auto", {"dense_multi": ("e5", leg_fit)})
    config = RetrievalConfig.from_file(path)
    assert config.hybrid_weights == {"keyword": 0.25, "graph": 0.0, "dense": 2.0}
    assert config.leg_weights == {"dense_multi": LEG_GRID[-1]}
    record = json.loads(path.read_text())["leg_fit"]["dense_multi"]
    assert record["model"] == "e5" and "train" in record["fitted_on"] and len(record["grid"]) == len(LEG_GRID)
    # a fit without leg fits drops them: every leg then uses the one dense weight
    write_weights(path, fitted, "a_corpus", 10, "auto")
    assert RetrievalConfig.from_file(path).leg_weights == {}


def test_the_fit_gives_own_weights_to_the_plan_legs_the_train_corpus_did_not_build(built):
    retriever, _, _ = _legs_retriever(built, english_only=True)
    assert leg_providers_to_fit("auto", retriever) == {"dense_multi": "e5"}
    both, _, _ = _legs_retriever(built, english_only=False)
    assert leg_providers_to_fit("auto", both) == {} and leg_providers_to_fit("e5", retriever) == {}


def test_the_shipped_leg_weights_were_fitted_on_train_queries():
    fitted = json.loads(WEIGHTS_FILE.read_text())
    legs = fitted["config"].get("leg_weights", {})
    assert set(legs) == set(fitted.get("leg_fit", {}))
    for leg, weight in legs.items():
        record = fitted["leg_fit"][leg]
        assert "train" in record["fitted_on"] and "test" not in record["fitted_on"]
        best = max(record["grid"], key=lambda row: row["train_ndcg@10"])
        assert weight == best["dense"] and record["train_ndcg@10"] == best["train_ndcg@10"]
    assert RetrievalConfig.from_file().leg_weights == legs
