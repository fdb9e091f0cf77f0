import json
import os
from pathlib import Path

import pytest

from graphrag import builder, index_store
from graphrag.builder import BuildOptions, build_index
from graphrag.index_store import load_index
from graphrag.retriever import Retriever


def _options(tmp_path):
    return BuildOptions(embedding_provider="hashing", vector_store_path=tmp_path / "vectors")


def test_build_reports_skipped_files_and_indexes_the_rest(built):
    _, index_path, summary = built
    assert set(summary.skipped) == {"english/broken.pdf", "english/logo.png"}
    assert "PDF" in summary.skipped["english/broken.pdf"]
    index = load_index(index_path)
    assert {c.path for c in index.chunks} == {
        "english/thesis.md", "english/evidence.md", "english/citations.html", "english/notes.txt",
        "chinese/argument.md"}
    assert summary.chunks == len(index.chunks) and summary.terms > 10 and summary.communities >= 1
    assert index.vectors is not None and index.vectors.shape[0] == len(index.chunks)
    assert index.manifest["skipped"] == summary.skipped
    assert all(c.summary.startswith("Topic:") for c in index.communities)


def test_citations_point_at_the_right_lines(built):
    course, index_path, _ = built
    index = load_index(index_path)
    for chunk in index.chunks:
        lines = (course / chunk.path).read_text(encoding="utf-8").splitlines()
        cited = "\n".join(lines[chunk.start_line - 1:chunk.end_line])
        if chunk.path.endswith(".html"):
            for word in chunk.text.split()[:3]:
                assert word in cited
        else:
            for paragraph in chunk.text.split("\n\n"):
                assert paragraph in cited
    arguable = next(c for c in index.chunks if "arguable" in c.text)
    assert (arguable.path, arguable.heading_path, arguable.start_line, arguable.end_line) == (
        "english/thesis.md", ["Thesis Statements", "Arguable claims"], 8, 9)


def test_citation_paths_are_relative_to_root(course, tmp_path):
    build_index(course / "english", tmp_path / "index", root=course, options=_options(tmp_path), progress=None)
    assert {c.path.split("/")[0] for c in load_index(tmp_path / "index").chunks} == {"english"}


def _snapshot(index_path: Path):
    index = load_index(index_path)
    retriever = Retriever(index)
    results = {
        (query, mode): [(h.chunk_index, round(h.score, 5)) for h in retriever.search(query, 5, mode)]
        for query in ("thesis evidence", "citation style", "论点") for mode in ("keyword", "graph", "hybrid")
    }
    chunks = [(c.id, c.text, c.start_line, c.end_line, c.heading_path) for c in index.chunks]
    return chunks, index.key_terms, [c.terms for c in index.communities], results


def test_incremental_update_equals_full_rebuild_and_skips_unchanged_files(course, tmp_path, monkeypatch):
    options = _options(tmp_path)
    build_index(course, tmp_path / "incremental", options=options, progress=None)
    # change one file, add one, delete one
    (course / "english" / "evidence.md").write_text("# Evidence\n\nStatistics need context.\n", encoding="utf-8")
    (course / "english" / "new.md").write_text("# Outlines\n\nA reverse outline tests structure.\n", encoding="utf-8")
    (course / "english" / "notes.txt").unlink()

    read = []
    real_read_blocks = builder.read_blocks
    monkeypatch.setattr(builder, "read_blocks", lambda path: read.append(path.name) or real_read_blocks(path))
    summary = build_index(course, tmp_path / "incremental", update=True, options=options, progress=None)
    # Only the changed and new files are parsed (plus the two unreadable ones, retried each build).
    assert sorted(read) == ["broken.pdf", "evidence.md", "logo.png", "new.md"]
    assert summary.reused_files == 3
    build_index(course, tmp_path / "full", options=options, progress=None)
    assert _snapshot(tmp_path / "incremental") == _snapshot(tmp_path / "full")
    assert "english/notes.txt" not in load_index(tmp_path / "incremental").manifest["files"]


def test_a_touched_but_unchanged_file_is_reused(course, tmp_path):
    options = _options(tmp_path)
    build_index(course, tmp_path / "index", options=options, progress=None)
    os.utime(course / "english" / "thesis.md", ns=(1, 1))
    summary = build_index(course, tmp_path / "index", update=True, options=options, progress=None)
    assert summary.reused_files == 5


def test_a_crash_mid_build_leaves_the_previous_index_usable(built, monkeypatch):
    course, index_path, _ = built
    before = index_store.current_version_dir(index_path).name
    (course / "english" / "thesis.md").write_text("# Changed\n\nnew text\n", encoding="utf-8")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(index_store.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(course, index_path, options=BuildOptions("hashing", index_path.parent / "vectors"), progress=None)
    assert index_store.current_version_dir(index_path).name == before
    assert any("thesis statement" in c.text for c in load_index(index_path).chunks)


def test_build_cli_prints_a_summary(course, tmp_path, capsys):
    from graphrag.build import main

    code = main(["--input", str(course), "--output", str(tmp_path / "index"), "--embedding-provider", "none",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "5 files" in out and "chunks" in out and "communities" in out
    assert "skipped english/broken.pdf" in out
    manifest = json.loads((index_store.current_version_dir(tmp_path / "index") / "manifest.json").read_text())
    assert manifest["embedding"] is None
