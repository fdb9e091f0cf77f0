"""Fits how the reranker meets the first stage, on SciFact *train* queries only:

    python bench/bench_retrieval_rerank.py [--queries 120] [--reranker ms-marco-minilm-l12] [--write]

For a seeded sample of train queries it takes the hybrid top 20 (the fitted fusion weights in
graphrag/retrieval_weights.json), scores them with the cross-encoder once, and grid-searches
the number of candidates reranked (10, 20) and the blend: the cross-encoder alone, or
minmax(fused) + w * minmax(cross-encoder). --write stores the best point as `rerank_candidates`
and `rerank_weight` in the weights file (with the grid under `rerank_fit`). The test split is
measured by bench/bench_retrieval.py --reranker ..., never here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_retrieval import DEFAULT_DATA, build, chunks_to_documents, load_beir, ndcg_at_k, open_retriever  # noqa: E402
from graphrag.rerank import load_reranker  # noqa: E402
from graphrag.retriever import WEIGHTS_FILE, RetrievalConfig, _min_max  # noqa: E402

DEPTHS = (10, 20)
BLENDS: tuple = (0.25, 0.5, 1.0, 2.0, 4.0, None)  # None: the cross-encoder alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA[0])
    parser.add_argument("--queries", type=int, default=120, help="train queries sampled (seed 13)")
    parser.add_argument("--reranker", default="ms-marco-minilm-l12")
    parser.add_argument("--embedding-provider", default="auto")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_FILE)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    corpus, queries, qrels = load_beir(args.data, "train")
    ids = sorted(queries)
    random.Random(13).shuffle(ids)
    ids = ids[: args.queries]
    reranker = load_reranker(args.reranker)
    with tempfile.TemporaryDirectory(prefix="graphrag-rerank-fit-") as tmp:
        build(corpus, Path(tmp) / "index", args.embedding_provider)
        retriever = open_retriever(Path(tmp) / "index", RetrievalConfig.from_file(args.weights))
    rows, seconds = {}, []
    for n, qid in enumerate(ids, start=1):
        hits = retriever.search(queries[qid], top_k=max(DEPTHS), mode="hybrid")
        started = time.perf_counter()
        scores = reranker.score(queries[qid], [retriever.index.chunks[h.chunk_index].index_text for h in hits])
        seconds.append(time.perf_counter() - started)
        rows[qid] = ([h.chunk_index for h in hits], [h.score for h in hits], scores)
        if n % 20 == 0:
            print(f"[rerank fit] {n}/{len(ids)}", file=sys.stderr, flush=True)

    def score(depth: int | None, blend) -> float:
        values = []
        for qid in ids:
            chunks, fused, ce = rows[qid]
            d = min(depth or 0, len(chunks))
            head = np.asarray(fused[:d]) if d == 0 else (
                np.asarray(ce[:d]) if blend is None else _min_max(fused[:d]) + blend * _min_max(ce[:d]))
            order = sorted(range(d), key=lambda i: (-float(head[i]), i)) + list(range(d, len(chunks)))
            values.append(ndcg_at_k(chunks_to_documents(retriever, [chunks[i] for i in order]), qrels[qid]))
        return statistics.mean(values)

    baseline = score(None, None)
    grid = sorted(((score(d, b), d, b) for d in DEPTHS for b in BLENDS),
                  key=lambda r: (-r[0], r[1], -1 if r[2] is None else r[2]))
    print(f"{len(ids)} train queries; first stage nDCG@10 {baseline:.4f}; reranker {reranker.name}, "
          f"{statistics.median(seconds) * 1000:.0f} ms per query for {max(DEPTHS)} candidates (median)")
    print("| candidates | blend w (None: cross-encoder alone) | train nDCG@10 |\n|---|---|---|")
    for value, depth, blend in grid:
        print(f"| {depth} | {blend} | {value:.4f} |")
    best, depth, blend = grid[0]
    if args.write:
        fitted = json.loads(args.weights.read_text())
        fitted["config"].update({"rerank_candidates": depth, "rerank_weight": blend})
        fitted["rerank_fit"] = {
            "fitted_on": f"{args.data.name} qrels/train.tsv, {len(ids)} queries sampled with seed 13",
            "reranker": args.reranker, "first_stage_train_ndcg@10": round(baseline, 4),
            "train_ndcg@10": round(best, 4),
            "grid": [{"rerank_candidates": d, "rerank_weight": b, "train_ndcg@10": round(v, 4)} for v, d, b in grid],
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        args.weights.write_text(json.dumps(fitted, indent=2) + "\n")
        print(f"wrote rerank_candidates={depth}, rerank_weight={blend} to {args.weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
