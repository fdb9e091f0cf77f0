"""Fits how the reranker meets the first stage, on SciFact *train* queries only:

    python bench/bench_retrieval_rerank.py [--queries 120] [--reranker ms-marco-minilm-l12] [--write]

For a seeded sample of train queries it takes the hybrid top 20 (the fitted fusion weights in
graphrag/retrieval_weights.json), scores them with the cross-encoder once per pair length
(128, 192, 256 tokens), and grid-searches the length, the number of candidates reranked (10,
20) and the blend: the cross-encoder alone, or minmax(fused) + w * minmax(cross-encoder).
The cost of a rerank grows with candidates x tokens, so the point chosen is the cheapest one
within TOLERANCE of the best train score (differences that small are noise on a sample of
this size). --write stores it as `rerank_candidates`, `rerank_weight` and `rerank_max_tokens`
in the weights file (with the grid under `rerank_fit`). The test split is measured by
bench/bench_retrieval.py --reranker ..., never here.
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
MAX_TOKENS = (128, 192, 256)
TOLERANCE = 0.005
BLENDS: tuple = (0.25, 0.5, 1.0, 2.0, 4.0, None)  # None: the cross-encoder alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA[0])
    parser.add_argument("--queries", type=int, default=60, help="train queries sampled (seed 13)")
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
    lengths = MAX_TOKENS if hasattr(reranker, "use_fitted_max_tokens") else (None,)
    with tempfile.TemporaryDirectory(prefix="graphrag-rerank-fit-") as tmp:
        build(corpus, Path(tmp) / "index", args.embedding_provider)
        retriever = open_retriever(Path(tmp) / "index", RetrievalConfig.from_file(args.weights))
    rows, seconds = {}, {}
    first = {qid: retriever.search(queries[qid], top_k=max(DEPTHS), mode="hybrid") for qid in ids}
    for length in lengths:
        if length:
            reranker._length_forced = False
            reranker.use_fitted_max_tokens(length)
        for n, qid in enumerate(ids, start=1):
            hits = first[qid]
            started = time.perf_counter()
            scores = reranker.score(queries[qid], [retriever.index.chunks[h.chunk_index].index_text for h in hits])
            seconds.setdefault(length, []).append(time.perf_counter() - started)
            rows[length, qid] = ([h.chunk_index for h in hits], [h.score for h in hits], scores)
            if n % 20 == 0:
                print(f"[rerank fit] {length} tokens: {n}/{len(ids)}", file=sys.stderr, flush=True)

    def score(depth: int | None, blend, length=lengths[0]) -> float:
        values = []
        for qid in ids:
            chunks, fused, ce = rows[length, qid]
            d = min(depth or 0, len(chunks))
            head = np.asarray(fused[:d]) if d == 0 else (
                np.asarray(ce[:d]) if blend is None else _min_max(fused[:d]) + blend * _min_max(ce[:d]))
            order = sorted(range(d), key=lambda i: (-float(head[i]), i)) + list(range(d, len(chunks)))
            values.append(ndcg_at_k(chunks_to_documents(retriever, [chunks[i] for i in order]), qrels[qid]))
        return statistics.mean(values)

    baseline = score(None, None)
    grid = sorted(((score(d, b, n), d, b, n) for n in lengths for d in DEPTHS for b in BLENDS),
                  key=lambda r: (-r[0], r[1], r[3] or 0, -1 if r[2] is None else r[2]))
    print(f"{len(ids)} train queries; first stage nDCG@10 {baseline:.4f}; reranker {reranker.name}; median ms "
          f"to score {max(DEPTHS)} candidates: " + ", ".join(
              f"{n} tokens {statistics.median(s) * 1000:.0f}" for n, s in seconds.items()))
    print("| tokens | candidates | blend w (None: cross-encoder alone) | train nDCG@10 |\n|---|---|---|---|")
    for value, depth, blend, length in grid:
        print(f"| {length} | {depth} | {blend} | {value:.4f} |")
    top = grid[0][0]
    best, depth, blend, length = min((r for r in grid if r[0] >= top - TOLERANCE),
                                     key=lambda r: (r[1] * (r[3] or 512), -r[0]))
    print(f"chosen (cheapest within {TOLERANCE} of the best, {top:.4f}): {length} tokens, {depth} candidates, "
          f"blend {blend}: {best:.4f}")
    if args.write:
        fitted = json.loads(args.weights.read_text())
        fitted["config"].update({"rerank_candidates": depth, "rerank_weight": blend, "rerank_max_tokens": length})
        fitted["rerank_fit"] = {
            "fitted_on": f"{args.data.name} qrels/train.tsv, {len(ids)} queries sampled with seed 13",
            "reranker": args.reranker, "first_stage_train_ndcg@10": round(baseline, 4),
            "train_ndcg@10": round(best, 4), "best_train_ndcg@10": round(top, 4),
            "rule": f"the cheapest point (candidates x tokens) within {TOLERANCE} of the best train score",
            "median_ms_for_20_candidates": {str(n): round(statistics.median(s) * 1000, 1) for n, s in seconds.items()},
            "grid": [{"rerank_max_tokens": n, "rerank_candidates": d, "rerank_weight": b, "train_ndcg@10": round(v, 4)}
                     for v, d, b, n in grid],
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        args.weights.write_text(json.dumps(fitted, indent=2) + "\n")
        print(f"wrote rerank_candidates={depth}, rerank_weight={blend}, rerank_max_tokens={length} to {args.weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
