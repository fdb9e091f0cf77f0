"""The keyword leg's boost by term coverage: a query that copies a passage's words gets the
keyword order back from a dense-heavy fusion; the setting comes from the fitted weights file."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from graphrag.retriever import WEIGHTS_FILE, RetrievalConfig, Retriever, keyword_boost
from graphrag.text import tokenize
from tests.graphrag.test_graphrag_language import _legs_retriever

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_retrieval import COVERAGE_TOLERANCE, PROXY_QUERIES, extractive_queries, two_part_queries  # noqa: E402

COPIED = "Support the claim with evidence from sources"  # a sentence of the fixture course


def test_the_boost_ramps_from_the_fitted_start_to_full_coverage():
    setting = {"from": 0.6, "boost": 4.0}
    assert keyword_boost(0.3, setting) == 0.0 and keyword_boost(0.6, setting) == 0.0
    assert keyword_boost(0.8, setting) == pytest.approx(2.0)
    assert keyword_boost(1.0, setting) == pytest.approx(4.0)
    assert keyword_boost(1.0, {}) == 0.0 and keyword_boost(1.0, {"from": 0.6, "boost": 0.0}) == 0.0
    # the coverage gap's term adds to it, on its own ramp
    both = {**setting, "gap_from": 0.2, "gap_boost": 8.0}
    assert keyword_boost(0.8, both, coverage_gap=0.1) == pytest.approx(2.0)
    assert keyword_boost(0.8, both, coverage_gap=0.6) == pytest.approx(2.0 + 4.0)
    assert keyword_boost(0.3, both, coverage_gap=1.0) == pytest.approx(8.0)


def _idf(retriever: Retriever, term: str) -> float:
    vocab = retriever.index.bm25.vocab_dict
    df = int(retriever.document_frequency[vocab[term]]) if term in vocab else 0
    n = len(retriever.index.chunks)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def test_term_coverage_is_the_idf_weighted_share_found_in_the_best_keyword_chunk(built):
    retriever, _, _ = _legs_retriever(built, english_only=True)
    tokens = tokenize(COPIED)
    keyword = retriever.keyword_scores(tokens, None)
    assert retriever.term_coverage(tokens, keyword) == pytest.approx(1.0)

    # a word the corpus lacks counts as missing, with the highest idf of all
    tokens = tokenize("thesis zyxwvut")
    keyword = retriever.keyword_scores(tokens, None)
    thesis, unknown = tokens  # as indexed (stemmed)
    best = set(retriever.index.chunks[int(np.argmax(keyword))].tokens)
    assert thesis in best and unknown not in best
    expected = _idf(retriever, thesis) / (_idf(retriever, thesis) + _idf(retriever, unknown))
    assert retriever.term_coverage(tokens, keyword) == pytest.approx(expected)
    assert 0 < expected < 0.5

    nothing = tokenize("zyxwvut qponml")
    assert retriever.term_coverage(nothing, retriever.keyword_scores(nothing, None)) == 0.0


def test_coverage_over_the_top_chunks_counts_a_question_about_two_passages(built):
    retriever, _, _ = _legs_retriever(built, english_only=True)
    tokens = tokenize("Support the claim with evidence from sources and revise the thesis")
    keyword = retriever.keyword_scores(tokens, None)
    one, two = retriever.term_coverage(tokens, keyword, 1), retriever.term_coverage(tokens, keyword, 2)
    assert one < 1.0 and two == pytest.approx(1.0)  # each half is in a different chunk
    assert retriever.term_coverage(tokens, keyword, 3) == pytest.approx(1.0)


def test_the_coverage_gap_is_what_the_keyword_chunks_hold_and_the_dense_ones_miss(built):
    retriever, _, english = _legs_retriever(built, english_only=True)
    query = COPIED
    tokens = tokenize(query)
    signals, candidates, _, _ = retriever.signals(query)
    assert candidates["dense_en"][0] == english[-1]  # the fake model's favourite holds none of these words
    dense_share = retriever.chunks_coverage(tokens, candidates["dense_en"][:1])
    assert dense_share < 0.5
    assert retriever.coverage_gap(tokens, signals, candidates, 1) == pytest.approx(1.0 - dense_share)
    keyword_only = {"keyword": signals["keyword"], "graph": signals["graph"]}
    assert retriever.coverage_gap(tokens, keyword_only, candidates, 1) == 0.0  # no dense leg, no gap


def test_a_query_that_copies_a_passage_gets_the_keyword_order_back(built):
    retriever, _, english = _legs_retriever(built, english_only=True)
    keyword_first = retriever.search(COPIED, 1, "keyword")[0].chunk_index
    assert keyword_first != english[-1]  # the fake English model prefers the last English chunk
    weights = {"keyword": 0.25, "graph": 0.0, "dense": 50.0}

    retriever.config = RetrievalConfig(fusion="zscore", hybrid_weights=weights)
    assert retriever.search(COPIED, 1, "hybrid")[0].chunk_index == english[-1]  # the dense leg decides

    retriever.config = RetrievalConfig(fusion="zscore", hybrid_weights=weights,
                                       keyword_coverage={"from": 0.7, "boost": 1000.0})
    hits, legs = retriever.search_with_legs(COPIED, 1, "hybrid")
    assert hits[0].chunk_index == keyword_first and legs == ["bm25", "graph", "dense"]
    # a query the best chunk covers only partly keeps the dense-heavy fusion
    partial = "thesis zyxwvut qponml"
    assert retriever.term_coverage(tokenize(partial), retriever.keyword_scores(tokenize(partial), None)) < 0.7
    assert retriever.search(partial, 1, "hybrid")[0].chunk_index == english[-1]


def test_extractive_proxy_queries_copy_one_sentence_of_their_document():
    text = ("Short one. The enzyme binds the receptor in the membrane of cultured human cells under low oxygen. "
            "Another sentence that is long enough to be chosen by the generator for its question here.")
    corpus = [{"_id": str(i), "title": f"t{i}", "text": text} for i in range(30)]
    queries, qrels = extractive_queries(corpus, 10, seed=3, exclude={"0", "1"})
    assert len(queries) == 10 and queries == extractive_queries(corpus, 10, seed=3, exclude={"0", "1"})[0]
    assert all(set(rel) - {"0", "1"} == set(rel) and len(rel) == 1 for rel in qrels.values())
    assert len({doc for rel in qrels.values() for doc in rel}) == 10  # one question per document
    for query in queries.values():
        words = query.rstrip("?").split()
        assert words[0] == "What" and set(words[1:]) <= set(text.replace(".", "").split())
        assert 10 - 4 <= len(words) - 1 <= 30 - 2  # one sentence less its 2-4 word answer span


def test_two_part_proxy_questions_join_two_documents():
    corpus = [{"_id": str(i), "title": f"t{i}", "text": f"Doc{i} alpha beta gamma delta epsilon zeta eta theta iota "
               f"kappa lambda mu{i}. Another sentence too short."} for i in range(40)]
    queries, qrels = two_part_queries(corpus, 12, seed=5, exclude={"3"})
    assert len(queries) == 12 and queries == two_part_queries(corpus, 12, seed=5, exclude={"3"})[0]
    for query_id, query in queries.items():
        assert len(qrels[query_id]) == 2 and "3" not in qrels[query_id]
        assert query.startswith("What ") and " and " in query and len(query.rstrip("?").split()) <= 1 + 8 + 1 + 8


def test_the_shipped_boost_was_chosen_by_its_rule_on_train_and_proxy_queries():
    fitted = json.loads(WEIGHTS_FILE.read_text())
    setting, record = fitted["config"]["keyword_coverage"], fitted["keyword_coverage_fit"]
    assert "train.tsv" in record["fitted_on"] and "excluded" in record["fitted_on"]
    assert set(record["keyword_ndcg@10"]) == set(PROXY_QUERIES)
    for row in record["grid"]:  # the worst gap is the worse proxy set's distance to keyword retrieval
        gaps = [row[f"{name}_ndcg@10"] - record["keyword_ndcg@10"][name] for name in PROXY_QUERIES]
        assert row["worst_proxy_gap"] == pytest.approx(min(gaps), abs=2e-4)

    def chosen(grid, tie_break):
        best_train = max(row["train_ndcg@10"] for row in grid)
        within = [row for row in grid if row["train_ndcg@10"] >= best_train - COVERAGE_TOLERANCE]
        return max(within, key=lambda row: (row["worst_proxy_gap"], *tie_break(row)))

    first = chosen(record["grid"], lambda row: (-row["boost"], row["from"], -row["top"]))
    assert all(row[k] == first[k] for row in record["gap_grid"] for k in ("top", "from", "boost"))
    second = chosen(record["gap_grid"], lambda row: (-row["gap_boost"], row["gap_from"]))
    assert setting == {k: second[k] for k in ("top", "from", "boost", "gap_from", "gap_boost")}
    assert RetrievalConfig.from_file().keyword_coverage == setting
