"""The build embeds in a background thread while terms, graph and BM25 are built: the same index
as before, the stages really overlap, and an embedding error still fails the build."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphrag import builder, dense
from graphrag.builder import BuildOptions, build_index
from graphrag.index_store import load_index


class SlowHashing(dense.HashingEmbedder):
    """The hashing embedder, recording the thread it ran in and waiting until the main thread
    has finished the term graph (so the test fails if embedding ran before or after it)."""

    def __init__(self, graph_done: threading.Event):
        self.graph_done = graph_done
        self.threads: list[str] = []
        self.overlapped = False

    def encode(self, texts, show_progress=False):
        self.threads.append(threading.current_thread().name)
        self.overlapped = self.overlapped or self.graph_done.wait(timeout=10)
        return super().encode(texts)


def test_embedding_overlaps_the_python_stages_and_gives_the_same_index(course, tmp_path, monkeypatch):
    reference = build_index(course, tmp_path / "plain", options=BuildOptions("hashing", tmp_path / "v1"),
                            progress=None)
    graph_done = threading.Event()
    embedder = SlowHashing(graph_done)
    original_communities = builder.build_communities

    def communities_then_signal(*args, **kwargs):
        result = original_communities(*args, **kwargs)
        graph_done.set()
        return result

    monkeypatch.setattr(builder, "build_communities", communities_then_signal)
    monkeypatch.setattr(builder, "load_embedder", lambda provider: embedder)
    summary = build_index(course, tmp_path / "overlap", options=BuildOptions("hashing", tmp_path / "v2"),
                          progress=None)
    assert embedder.overlapped and all(name.startswith("graphrag-embed") for name in embedder.threads)
    assert {"terms_and_graph", "bm25", "embedding", "embedding_wait"} <= set(summary.stage_seconds)
    a, b = load_index(tmp_path / "plain"), load_index(tmp_path / "overlap")
    assert [c.id for c in a.chunks] == [c.id for c in b.chunks] and a.key_terms == b.key_terms
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert reference.chunks == summary.chunks


def test_an_embedding_error_fails_the_build(course, tmp_path, monkeypatch):
    class Broken(dense.HashingEmbedder):
        def encode(self, texts, show_progress=False):
            raise RuntimeError("model file damaged")

    monkeypatch.setattr(builder, "load_embedder", lambda provider: Broken())
    with pytest.raises(RuntimeError, match="model file damaged"):
        build_index(course, tmp_path / "index", options=BuildOptions("hashing", tmp_path / "v"), progress=None)
    assert not (tmp_path / "index" / "CURRENT").exists()
