"""Language detection, language-weighted dense legs, fitted weights from a file, the reranker switch."""

import json

import numpy as np
import pytest

from graphrag.index_store import DenseLeg, load_index
from graphrag.language import coverage, language_shares, primary_language
from graphrag.retriever import WEIGHTS_FILE, RetrievalConfig, Retriever


@pytest.mark.parametrize("text, expected", [
    ("thesis", "en"), ("论点", "zh"), ("中心论点在哪里提出？", "zh"), ("Where is the thesis stated?", "en"),
    ("什么是 thesis statement?", "mixed"), ("APA格式的参考文献怎么排序", "zh"), ("2020", "none"), ("", "none"),
    ("Привет мир", "other"),
])
def test_primary_language_of_short_and_mixed_queries(text, expected):
    assert primary_language(text) == expected


def test_shares_weigh_an_english_word_as_one_and_a_half_characters():
    shares = language_shares("用 thesis 写")  # 2 Han characters, one English word (1.5)
    assert shares == {"en": round(1.5 / 3.5, 4), "zh": round(2 / 3.5, 4)}
    assert coverage(shares, {"en"}) == shares["en"] and coverage(shares, {"en", "zh"}) == 1.0
    assert coverage({}, {"en"}) == 1.0  # no letters: nothing a model could misunderstand


class _Fake:
    """A query embedder that always returns one fixed direction."""

    def __init__(self, name, languages, vector):
        self.name, self.languages, self.dimension, self.vector = name, frozenset(languages), len(vector), vector

    def encode_queries(self, texts):
        return np.tile(np.asarray(self.vector, dtype=np.float32), (len(texts), 1))


def _legs_retriever(built, english_only: bool):
    _, index_path, _ = built
    index = load_index(index_path)
    index.vectors = None
    n = len(index.chunks)
    chinese = [i for i, c in enumerate(index.chunks) if c.path.startswith("chinese/")]
    english = [i for i in range(n) if i not in chinese]
    # the English model prefers the last English chunk; the multilingual one the last Chinese chunk
    en_vectors = np.zeros((len(english), 2), dtype=np.float32)
    en_vectors[:, 1] = 1.0
    en_vectors[-1] = [1.0, 0.0]
    legs = {"dense_en": DenseLeg(np.asarray(english), en_vectors, "fake-en", ["en"])}
    embedders = {"dense_en": _Fake("fake-en", {"en"}, [1.0, 0.0])}
    if not english_only:
        multi = np.zeros((n, 2), dtype=np.float32)
        multi[:, 1] = 1.0
        multi[chinese[-1]] = [1.0, 0.0]
        legs["dense_multi"] = DenseLeg(np.arange(n), multi, "fake-multi", ["en", "zh"])
        embedders["dense_multi"] = _Fake("fake-multi", {"en", "zh"}, [1.0, 0.0])
    index.dense_legs = legs
    config = RetrievalConfig(hybrid_weights={"keyword": 1.0, "graph": 1.0, "dense": 1.0})
    return Retriever(index, None, config, embedders=embedders), chinese, english


def test_each_query_language_goes_to_the_most_specific_leg_that_understands_it(built):
    retriever, _, _ = _legs_retriever(built, english_only=False)
    assert retriever.dense_weights("Where is the thesis stated?") == {"dense_en": 1.0}
    assert retriever.dense_weights("中心论点在哪里提出") == {"dense_multi": 1.0}
    mixed = retriever.dense_weights("thesis 中心论点")
    assert set(mixed) == {"dense_en", "dense_multi"} and abs(sum(mixed.values()) - 1.0) < 1e-3


def test_an_english_only_model_gives_a_chinese_query_no_dense_signal(built):
    """The dense leg can never pull a Chinese query below keyword + graph."""
    retriever, _, _ = _legs_retriever(built, english_only=True)
    assert retriever.dense_weights("中心论点在哪里提出") == {}
    hits, legs = retriever.search_with_legs("中心论点在哪里提出", 3, "hybrid")
    assert legs == ["bm25", "graph"]
    without_dense = Retriever(retriever.index, None, retriever.config)
    without_dense.index = retriever.index
    assert [h.chunk_index for h in hits] == [h.chunk_index for h in without_dense.search("中心论点在哪里提出", 3)]


def test_a_chinese_query_reaches_chinese_chunks_through_the_multilingual_leg(built):
    retriever, chinese, _ = _legs_retriever(built, english_only=False)
    hits, legs = retriever.search_with_legs("怎样写开头", 3, "hybrid")  # no keyword of the passage
    assert legs == ["bm25", "graph", "dense"]
    assert hits[0].chunk_index == chinese[-1] and hits[0].why["ranks"]["dense"] == 1


def test_hybrid_weights_come_from_the_fitted_file(built, tmp_path):
    _, index_path, _ = built
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"fitted_on": "a test", "config": {
        "fusion": "weighted", "hybrid_weights": {"keyword": 1.0, "graph": 0.0, "dense": 0.0}}}))
    config = RetrievalConfig.from_file(weights)
    assert config.hybrid_weights == {"keyword": 1.0, "graph": 0.0, "dense": 0.0} and "a test" in config.source
    retriever = Retriever(load_index(index_path), None, config)
    query = "evidence statistic"
    assert [h.chunk_index for h in retriever.search(query, 4, "hybrid")] == \
        [h.chunk_index for h in retriever.search(query, 4, "keyword")]
    assert RetrievalConfig.from_file(tmp_path / "absent.json").source.startswith("defaults")


def test_the_shipped_weights_were_fitted_on_train_queries():
    fitted = json.loads(WEIGHTS_FILE.read_text())
    assert "train" in fitted["fitted_on"] and "test" not in fitted["fitted_on"]
    assert RetrievalConfig.from_file().hybrid_weights == fitted["config"]["hybrid_weights"]


class _PreferLast:
    """Scores the candidates in the reverse of the first-stage order."""

    name = "prefer-last"

    def score(self, query, passages):
        return np.arange(len(passages), dtype=np.float32)


def test_the_reranker_reorders_only_when_asked(built):
    _, index_path, _ = built
    config = RetrievalConfig(rerank_candidates=6)
    retriever = Retriever(load_index(index_path), None, config, reranker=_PreferLast())
    query = "evidence quotation statistic sources"
    plain, plain_legs = retriever.search_with_legs(query, 3, "hybrid", rerank=False)
    candidates = retriever.search(query, 6, "hybrid")
    reranked, legs = retriever.search_with_legs(query, 3, "hybrid", rerank=True)
    assert plain_legs == ["bm25", "graph"] and legs == ["bm25", "graph", "rerank"]
    assert len(candidates) == 6 and reranked[0].chunk_index == candidates[-1].chunk_index != plain[0].chunk_index
    assert reranked[0].why["ranks"]["rerank"] == 1 and "keyword" in reranked[0].why["ranks"]
    # without a configured reranker, asking for one changes nothing and says so
    bare = Retriever(retriever.index, None, config)
    hits, bare_legs = bare.search_with_legs(query, 3, "hybrid", rerank=True)
    assert "rerank" not in bare_legs and [h.chunk_index for h in hits] == [h.chunk_index for h in plain]


def test_the_service_reports_legs_and_reranks_per_request(built, monkeypatch):
    from fastapi.testclient import TestClient

    import graphrag.app as app_module
    from graphrag.settings import GraphRAGSettings

    monkeypatch.setattr(app_module, "load_reranker_or_none", lambda provider: _PreferLast() if provider else None)
    _, index_path, _ = built
    settings = GraphRAGSettings(graph_rag_index_path=index_path, reranker_provider="st-cross:/fake")
    query = {"query": "evidence quotation statistic sources", "top_k": 3}
    with TestClient(app_module.create_app(settings)) as client:
        plain = client.post("/v1/retrieve", json=query).json()
        reranked = client.post("/v1/retrieve", json={**query, "rerank": True}).json()
        keyword = client.post("/v1/retrieve", json={**query, "mode": "keyword", "rerank": True}).json()
    assert plain["legs"] == ["bm25", "graph", "dense"] and plain["language"] == {"en": 1.0}
    assert reranked["legs"] == ["bm25", "graph", "dense", "rerank"]
    assert reranked["data"][0]["why"]["ranks"]["rerank"] == 1 and reranked["data"][0]["id"] != plain["data"][0]["id"]
    assert keyword["legs"] == ["bm25"]
