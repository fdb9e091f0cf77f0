"""A tiny course folder (English, Chinese, HTML, text, one broken PDF, one binary) built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphrag.builder import BuildOptions, build_index
from tests.graphrag.course import write_course


@pytest.fixture
def course(tmp_path) -> Path:
    return write_course(tmp_path / "course")


@pytest.fixture
def built(course, tmp_path):
    """(course folder, index folder, summary) built with the no-model hashing embedder."""
    index = tmp_path / "index"
    options = BuildOptions(embedding_provider="hashing", vector_store_path=tmp_path / "vectors")
    summary = build_index(course, index, options=options, progress=None)
    return course, index, summary
