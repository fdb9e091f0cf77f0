"""The on-disk index: versioned folders and an atomically replaced CURRENT pointer.

    INDEX/CURRENT                      name of the live version (replaced with os.replace)
    INDEX/versions/<version>/          manifest.json, chunks.jsonl, graph.json, bm25/, vectors.npy

A build writes a new version folder completely, then flips CURRENT; a crash before the
flip leaves the previous version live and untouched. Old versions are pruned, keeping a
few so a reader that resolved CURRENT just before the flip can still open its version.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import networkx as nx
import numpy as np

from graphrag.corpus import Chunk
from graphrag.dense import provider_languages
from graphrag.graph import Community, chunk_term_graph

FORMAT_VERSION = 1
VERSIONS_KEPT = 3


class IndexNotFound(Exception):
    pass


@dataclass
class IndexData:
    """Everything retrieval needs, in memory."""

    manifest: dict
    chunks: list[Chunk]
    key_terms: list[list[str]]
    term_idf: dict[str, float]
    term_labels: dict[str, str]
    cooccurrence: nx.Graph
    communities: list[Community]
    chunk_community: list[int]
    bm25: bm25s.BM25
    vectors: np.ndarray | None = None  # one model over every chunk (a single EMBEDDING_PROVIDER)
    chunk_terms: nx.Graph = field(default=None)  # built on load from key_terms
    # Several models, each over some chunks (EMBEDDING_PROVIDER=auto): leg name -> DenseLeg.
    dense_legs: dict[str, "DenseLeg"] | None = None

    def __post_init__(self) -> None:
        if self.chunk_terms is None:
            self.chunk_terms = chunk_term_graph([c.id for c in self.chunks], self.key_terms)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    def legs(self) -> dict[str, "DenseLeg"]:
        """The dense legs, whatever the build: a single-model index is one leg named "dense"."""
        if self.dense_legs:
            return self.dense_legs
        if self.vectors is None:
            return {}
        embedding = self.manifest.get("embedding") or {}
        provider = embedding.get("provider", "")
        return {"dense": DenseLeg(np.arange(len(self.chunks)), self.vectors, provider,
                                  embedding.get("languages") or sorted(provider_languages(provider)))}


@dataclass
class DenseLeg:
    rows: np.ndarray  # chunk positions this leg has vectors for
    vectors: np.ndarray  # one unit row per entry of rows
    provider: str  # how to load the model that embeds the query (graphrag.dense.load_embedder)
    languages: list[str]  # the languages that model understands


def new_version_name() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def write_index(root: Path, data: IndexData) -> Path:
    root = Path(root)
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / data.version
    staging = versions / f".{data.version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()

    _write_json(staging / "manifest.json", data.manifest)
    with open(staging / "chunks.jsonl", "w", encoding="utf-8") as out:
        for chunk in data.chunks:
            # vars(), not chunk.to_json(): the same fields in the same order, without dataclasses.asdict's
            # deep copy of every token list (a third of the write stage on SciFact)
            out.write(json.dumps(vars(chunk), ensure_ascii=False) + "\n")
    _write_json(staging / "graph.json", {
        "key_terms": data.key_terms,
        "term_idf": data.term_idf,
        "term_labels": data.term_labels,
        "edges": [[a, b, w] for a, b, w in data.cooccurrence.edges(data="weight")],
        "communities": [c.to_json() for c in data.communities],
        "chunk_community": data.chunk_community,
    })
    data.bm25.save(str(staging / "bm25"))
    if data.vectors is not None:
        np.save(staging / "vectors.npy", data.vectors)
    for name, leg in (data.dense_legs or {}).items():
        np.savez(staging / f"dense-{name}.npz", rows=leg.rows.astype(np.int64), vectors=leg.vectors.astype(np.float32))

    os.replace(staging, final)
    pointer_tmp = root / f".CURRENT.{uuid.uuid4().hex}"
    pointer_tmp.write_text(data.version + "\n")
    os.replace(pointer_tmp, root / "CURRENT")
    _prune(versions, keep=data.version)
    return final


def current_version_dir(root: Path) -> Path:
    pointer = Path(root) / "CURRENT"
    if not pointer.is_file():
        raise IndexNotFound(f"no index at {root} (run `python -m graphrag.build --input DOCS --output {root}`)")
    folder = Path(root) / "versions" / pointer.read_text().strip()
    if not (folder / "manifest.json").is_file():
        raise IndexNotFound(f"index pointer {pointer} names a missing version {folder.name}")
    return folder


def read_manifest(root: Path) -> dict:
    return json.loads((current_version_dir(root) / "manifest.json").read_text())


def load_index(root: Path) -> IndexData:
    folder = current_version_dir(root)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexNotFound(f"index format {manifest.get('format')} is not {FORMAT_VERSION}; rebuild it")
    with open(folder / "chunks.jsonl", encoding="utf-8") as lines:
        chunks = [Chunk(**json.loads(line)) for line in lines]
    graph = json.loads((folder / "graph.json").read_text())
    cooccurrence = nx.Graph()
    cooccurrence.add_nodes_from(graph["term_idf"])
    cooccurrence.add_weighted_edges_from(graph["edges"])
    vectors_file = folder / "vectors.npy"
    dense_legs = {}
    for name, leg in ((manifest.get("embedding") or {}).get("legs") or {}).items():
        with np.load(folder / f"dense-{name}.npz") as data:
            dense_legs[name] = DenseLeg(data["rows"], data["vectors"], leg["provider"], leg["languages"])
    return IndexData(
        manifest=manifest,
        chunks=chunks,
        key_terms=graph["key_terms"],
        term_idf=graph["term_idf"],
        term_labels=graph["term_labels"],
        cooccurrence=cooccurrence,
        communities=[Community(**c) for c in graph["communities"]],
        chunk_community=graph["chunk_community"],
        bm25=bm25s.BM25.load(str(folder / "bm25")),
        vectors=np.load(vectors_file) if vectors_file.is_file() else None,
        dense_legs=dense_legs or None,
    )


def index_size_bytes(root: Path) -> int:
    folder = current_version_dir(root)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def _prune(versions: Path, keep: str) -> None:
    names = sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names[:-VERSIONS_KEPT]:
        if name != keep:
            shutil.rmtree(versions / name, ignore_errors=True)
    # Staging folders of crashed builds; an hour old, so a build still running is left alone.
    for partial in versions.glob(".*.partial"):
        if time.time() - partial.stat().st_mtime > 3600:
            shutil.rmtree(partial, ignore_errors=True)
