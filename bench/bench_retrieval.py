"""Retrieval quality and speed on SciFact (BEIR test split): nDCG@10 and recall@100 per mode,
index build time and size, query latency p50/p99.

    python bench/bench_retrieval.py [--data ../shared/data/scifact_beir] [--embedding-provider minilm]

The abstracts are chunked and indexed by the same code as `python -m graphrag.build` (each
abstract is one Markdown document: title as heading, abstract as body). A document's score is
its best chunk's. Embeddings are cached under TUTORSTACK_HOME keyed by content hash, so only
the first run pays for MiniLM on CPU (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.paths import tutorstack_home  # noqa: E402
from graphrag.builder import BuildOptions, assemble_and_write, chunk_file  # noqa: E402
from graphrag.dense import SentenceTransformerEmbedder, load_embedder, single_thread_queries  # noqa: E402
from graphrag.documents import markdown_blocks  # noqa: E402
from graphrag.index_store import index_size_bytes, load_index  # noqa: E402
from graphrag.retriever import MODES, RetrievalConfig, Retriever  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact_beir"
ANCHORS = "published anchors: BM25 0.665, all-MiniLM-L6-v2 0.645 nDCG@10"


def load_scifact(folder: Path):
    corpus = [json.loads(line) for line in open(folder / "corpus.jsonl", encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(folder / "queries.jsonl", encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(folder / "qrels" / "test.tsv", encoding="utf-8"))[1:]:
        query_id, doc_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return corpus, {q: queries[q] for q in qrels}, qrels


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    hits = {doc for doc in ranked[:k] if relevant.get(doc, 0) > 0}
    return len(hits) / max(1, sum(1 for v in relevant.values() if v > 0))


def build(corpus, output: Path, provider: str):
    options = BuildOptions(embedding_provider=provider, vector_store_path=tutorstack_home() / "graphrag" / "vectors",
                           max_chars=2000, overlap_chars=200)
    started = time.perf_counter()
    chunks = []
    for doc in corpus:
        blocks = markdown_blocks(f"# {doc['title']}\n\n{doc['text']}\n")
        chunks.extend(chunk_file(doc["_id"], blocks, options))
    summary = assemble_and_write(output, chunks, {}, {}, options, None, started)
    return summary


def ranked_documents(retriever: Retriever, query: str, mode: str, depth: int = 100) -> list[str]:
    ranked, seen = [], set()
    for hit in retriever.search(query, top_k=depth + 20, mode=mode):
        doc = retriever.index.chunks[hit.chunk_index].path
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
    return ranked[:depth]


def evaluate(retriever: Retriever, queries, qrels, mode: str):
    ndcgs, recalls, latencies = [], [], []
    for query_id, text in queries.items():
        started = time.perf_counter()
        ranked = ranked_documents(retriever, text, mode)
        latencies.append((time.perf_counter() - started) * 1000)
        ndcgs.append(ndcg_at_k(ranked, qrels[query_id]))
        recalls.append(recall_at_k(ranked, qrels[query_id]))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return statistics.mean(ndcgs), statistics.mean(recalls), statistics.median(latencies), p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--embedding-provider", default=os.environ.get("EMBEDDING_PROVIDER") or "minilm")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--fusion", choices=["rrf", "weighted"], default=None)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.data / "corpus.jsonl").is_file():
        print(f"SciFact not found at {args.data}: skipping the retrieval bench.")
        return 0

    corpus, queries, qrels = load_scifact(args.data)
    with tempfile.TemporaryDirectory(prefix="graphrag-bench-") as folder:
        index_root = Path(folder) / "index"
        summary = build(corpus, index_root, args.embedding_provider)
        size = index_size_bytes(index_root)
        index = load_index(index_root)
    embedder = load_embedder(index.manifest["embedding"]["provider"]) if index.manifest["embedding"] else None
    if embedder is not None and isinstance(embedder, SentenceTransformerEmbedder):
        single_thread_queries()  # as the service does (graphrag/service.py)
    config = RetrievalConfig()
    if args.fusion:
        config.fusion = args.fusion
    retriever = Retriever(index, embedder, config)

    stages = ", ".join(f"{name} {sec:.1f}s" for name, sec in summary.stage_seconds.items())
    print(f"SciFact test: {len(corpus)} abstracts, {len(queries)} queries; {os.cpu_count()} CPU cores; "
          f"embedding: {args.embedding_provider or 'none'}")
    print(f"build {summary.seconds:.1f} s ({stages}; embeddings cached by content hash after the first run), "
          f"{summary.chunks} chunks, {summary.terms} terms, {summary.communities} communities, "
          f"index {size / 1e6:.1f} MB")
    print(f"{'mode':<8} {'nDCG@10':>8} {'R@100':>7} {'p50 ms':>7} {'p99 ms':>7}")
    results = {}
    for mode in args.modes.split(","):
        ndcg, recall, p50, p99 = evaluate(retriever, queries, qrels, mode)
        results[mode] = {"ndcg@10": ndcg, "recall@100": recall, "p50_ms": p50, "p99_ms": p99}
        print(f"{mode:<8} {ndcg:>8.3f} {recall:>7.3f} {p50:>7.1f} {p99:>7.1f}")
    print(ANCHORS)
    if args.json:
        args.json.write_text(json.dumps({"build_seconds": summary.seconds, "index_bytes": size,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
