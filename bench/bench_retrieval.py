"""Retrieval quality and speed on BEIR-format corpora: nDCG@10 and recall@100 per mode, on the
test split (never used for tuning) and, where there is one, the train split; index build time
and size; query latency p50/p99.

    python bench/bench_retrieval.py [--data DIR ...] [--embedding-provider auto] [--fit]
        [--compare auto-minilm=graphrag/retrieval_weights_minilm.json] [--reranker ms-marco-minilm-l12] [--cold]

Default corpora: SciFact (../shared/data/scifact_beir), the Chinese/English writing-course
set in data/zh_writing_bench (written for this bench, CC0; paraphrased questions) and
data/zh_extractive_bench (extractive CMRC-style questions generated from the repo's Chinese course
text, where BM25 is very strong). Each folder holds corpus.jsonl,
queries.jsonl and qrels/test.tsv (qrels/train.tsv optional). A document becomes one Markdown
file (title as heading) chunked and indexed by the same code as `python -m graphrag.build`; a
document's score is its best chunk's.

--fit chooses the hybrid fusion (weighted min-max, z-score or RRF) and the leg weights by grid search on the
*train* queries of the first corpus that has qrels/train.tsv (SciFact: 809 queries) and writes
them to graphrag/retrieval_weights.json, which the service loads; test queries are only
evaluated afterwards. Embeddings are cached under TUTORSTACK_HOME keyed by content hash and
model, so only a cold run pays for embedding; --cold builds the first corpus with an empty
vector store (what a new deployment pays) and records the load average around the build.

With --fit, each dense leg of the `auto` plan that the train corpus does not build (SciFact is
English: `dense_multi`, e5) gets its own dense weight (config `leg_weights`), fitted on the same
train queries from a build with that leg's model alone, the fusion and keyword/graph weights held
at the fitted point (--fit-legs none: every leg uses the one dense weight).

With --fit, the keyword leg's boost by term coverage (config `keyword_coverage`, see
graphrag.retriever.RetrievalConfig) is fitted last, on the train queries together with proxy
questions made from the train corpus's own documents (extractive_queries and two_part_queries, seed
PROXY_FIT_SEED, documents judged by test queries excluded). Every corpus with a train split is also
measured on held-out proxy splits ("extractive (held-out)", "two-part (held-out)": another seed,
other documents).

--compare PROVIDER=WEIGHTS evaluates another configuration (its own fitted weights file) in
the same run, side by side: by default the previous default (`auto-minilm`: all-MiniLM-L6-v2
for English) with the weights that were fitted for it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.paths import tutorstack_home  # noqa: E402
from graphrag.builder import BuildOptions, assemble_and_write, chunk_file  # noqa: E402
from graphrag.dense import AUTO_PLANS  # noqa: E402
from graphrag.documents import markdown_blocks  # noqa: E402
from graphrag.fusion import top_items, zscore_fusion  # noqa: E402
from graphrag.index_store import index_size_bytes, load_index  # noqa: E402
from graphrag.language import primary_language  # noqa: E402
from graphrag.rerank import load_reranker  # noqa: E402
from graphrag.retriever import WEIGHTS_FILE, RetrievalConfig, Retriever  # noqa: E402
from graphrag.service import IndexHolder  # noqa: E402
from graphrag.text import tokenize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [REPO.parent / "shared" / "data" / "scifact_beir", REPO / "data" / "zh_writing_bench",
                REPO / "data" / "zh_extractive_bench"]
DEFAULT_COMPARE = [f"auto-minilm={WEIGHTS_FILE.with_name('retrieval_weights_minilm.json')}"]
RESULTS = REPO / "bench" / "results" / "retrieval.md"
ANCHORS = "SciFact published anchors: BM25 0.665, all-MiniLM-L6-v2 0.645 nDCG@10"
GRID_KEYWORD = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID_GRAPH = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID_DENSE = (0.5, 1.0, 1.5, 2.0)
# A dense leg's own weight (fit_leg), with the fitted keyword and graph weights held fixed.
LEG_GRID = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
FUSIONS = ("weighted", "zscore", "rrf")
# The keyword leg's boost by term coverage (RetrievalConfig.keyword_coverage), fitted after the
# weights above on the train queries together with extractive proxy queries (extractive_queries).
COVERAGE_TOP = (1, 2, 3)
COVERAGE_FROM = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
COVERAGE_BOOST = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0)
# The rule: among the points whose train score is within this of the best train point (a tie on
# 809 queries, as the reranker fit's rule), the one whose worse proxy set (extractive or two-part
# questions) comes closest to keyword retrieval on it (the "never below keyword"); the
# smaller boost, then the higher start, then the fewer chunks on ties.
COVERAGE_TOLERANCE = 0.005
# then, the coverage setting held, the boost by the keyword-dense coverage gap (same rule)
GAP_FROM = (0.0, 0.1, 0.2, 0.3)
GAP_BOOST = (1.0, 2.0, 4.0, 8.0, 16.0)
PROXY_QUERIES = {"extractive": 300, "two-part": 200}
PROXY_FIT_SEED, PROXY_HELD_OUT_SEED = 7, 11


# ---- data and metrics ------------------------------------------------------------------------
def load_beir(folder: Path, split: str):
    corpus = [json.loads(line) for line in open(folder / "corpus.jsonl", encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(folder / "queries.jsonl", encoding="utf-8"))}
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    return corpus, {q: queries[q] for q in qrels if q in queries}, qrels


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(path, encoding="utf-8"))[1:]:
        if line.strip():
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def extractive_queries(corpus, count: int, seed: int, exclude: set[str] = frozenset()):
    """Extractive proxy questions from a corpus's own English text, as SQuAD-style annotators
    write them while reading a passage: one sentence of 10-30 words with a 2-4 word span (the
    "answer") removed and "What" in front; the sentence's document is the one relevant one.
    Seeded, one question per document, documents in `exclude` skipped. Returns (queries, qrels)."""
    rng = random.Random(seed)
    queries, qrels = {}, {}
    for doc in rng.sample(corpus, len(corpus)):
        if doc["_id"] in exclude:
            continue
        sentences = [x for x in _SENTENCE_SPLIT.split(doc.get("text", "")) if 10 <= len(x.split()) <= 30]
        if not sentences:
            continue
        words = rng.choice(sentences).rstrip(".").split()
        span = rng.randint(2, 4)
        start = rng.randint(2, len(words) - span)
        query_id = f"extractive-{seed}-{len(queries)}"
        queries[query_id] = " ".join(["What", *words[:start], *words[start + span:]]) + "?"
        qrels[query_id] = {doc["_id"]: 1}
        if len(queries) == count:
            break
    return queries, qrels


def two_part_queries(corpus, count: int, seed: int, exclude: set[str] = frozenset()):
    """Proxy questions about two documents at once ("what is X and how does Y ..."): two
    extractive_queries from different documents, each cut to 8 consecutive words, joined by "and";
    both documents are relevant. Seeded; documents in `exclude` skipped. Returns (queries, qrels)."""
    first = extractive_queries(corpus, 2 * count, seed, exclude)
    second = extractive_queries(corpus, 2 * count, seed + 1000, exclude)
    rng = random.Random(seed)
    queries, qrels = {}, {}
    for (id_a, text_a), (id_b, text_b) in zip(first[0].items(), second[0].items()):
        doc_a, doc_b = next(iter(first[1][id_a])), next(iter(second[1][id_b]))
        if doc_a == doc_b:
            continue
        halves = []
        for text in (text_a, text_b):
            words = text.rstrip("?").split()[1:]
            start = rng.randint(0, max(0, len(words) - 8))
            halves.append(" ".join(words[start:start + 8]))
        query_id = f"two-part-{seed}-{len(queries)}"
        queries[query_id] = f"What {halves[0]} and {halves[1]}?"
        qrels[query_id] = {doc_a: 1, doc_b: 1}
        if len(queries) == count:
            break
    return queries, qrels


def proxy_sets(corpus, seed: int, exclude: set[str] = frozenset()) -> dict:
    """The proxy question sets (PROXY_QUERIES) made from a corpus's own documents."""
    return {"extractive": extractive_queries(corpus, PROXY_QUERIES["extractive"], seed, exclude),
            "two-part": two_part_queries(corpus, PROXY_QUERIES["two-part"], seed, exclude)}


def fit_keyword_coverage(retriever: Retriever, train, proxies: dict) -> dict:
    """The keyword boost by term coverage (COVERAGE_TOP x COVERAGE_FROM x COVERAGE_BOOST, and no
    boost), everything else as configured, then with it held the boost by the coverage gap
    (GAP_FROM x GAP_BOOST, and none): scored on the train queries and on each proxy set
    (name -> (queries, qrels)); the rule, at both stages, is COVERAGE_TOLERANCE's."""
    def covered(tokens, signals, candidates):
        coverage_by_top = {}
        for top in COVERAGE_TOP:
            keyword = retriever.term_coverage(tokens, signals["keyword"], top)
            coverage_by_top[top] = (keyword, retriever.coverage_gap(tokens, signals, candidates, top,
                                                                   keyword_coverage=keyword))
        return coverage_by_top

    def cache(queries):
        return cache_signals(retriever, queries, extra=covered, progress=False)

    def score(rows, qrels, setting) -> float:
        top = setting.get("top", 1)
        total = 0.0
        for row in rows:
            term_coverage, gap = row.extra[top]
            fused = fuse_cached(retriever, row, term_coverage=term_coverage, keyword_coverage=setting,
                                coverage_gap=gap)
            total += ndcg_at_k(chunks_to_documents(retriever, top_items(fused, 120)), qrels[row.query_id])
        return total / len(rows)

    sets = {"train": (cache(train[0]), train[1])}
    sets.update({name: (cache(queries), qrels) for name, (queries, qrels) in proxies.items()})
    keyword_alone = {name: round(evaluate(retriever, queries, qrels, "keyword")["ndcg@10"], 4)
                     for name, (queries, qrels) in proxies.items()}
    def search(settings, tie_break):
        grid = []
        for n, setting in enumerate(settings, start=1):
            row = {**setting, **{f"{name}_ndcg@10": round(score(rows, qrels, setting), 4)
                                 for name, (rows, qrels) in sets.items()}}
            row["worst_proxy_gap"] = round(min(row[f"{name}_ndcg@10"] - keyword_alone[name] for name in proxies), 4)
            grid.append(row)
            if n % 25 == 0:
                print(f"[fit] keyword coverage {n}/{len(settings)}", file=sys.stderr, flush=True)
        best_train = max(g["train_ndcg@10"] for g in grid)
        within = [g for g in grid if g["train_ndcg@10"] >= best_train - COVERAGE_TOLERANCE]
        return max(within, key=lambda g: (g["worst_proxy_gap"], *tie_break(g))), grid

    best, grid = search([{"top": 1, "from": COVERAGE_FROM[0], "boost": 0.0}] + [
        {"top": top, "from": start, "boost": boost}
        for top, start, boost in itertools.product(COVERAGE_TOP, COVERAGE_FROM, COVERAGE_BOOST)],
        lambda g: (-g["boost"], g["from"], -g["top"]))
    held = {k: best[k] for k in ("top", "from", "boost")}
    best_gap, gap_grid = search([{**held, "gap_from": 0.0, "gap_boost": 0.0}] + [
        {**held, "gap_from": start, "gap_boost": boost} for start, boost in itertools.product(GAP_FROM, GAP_BOOST)],
        lambda g: (-g["gap_boost"], g["gap_from"]))
    medians = {name: {top: round(statistics.median(r.extra[top][0] for r in rows), 3) for top in COVERAGE_TOP}
               for name, (rows, _) in sets.items()}
    gaps = {name: round(statistics.median(r.extra[held["top"]][1] for r in rows), 3)
            for name, (rows, _) in sets.items()}
    return {"best": best_gap, "grid": grid, "gap_grid": gap_grid, "keyword_ndcg@10": keyword_alone,
            "term_coverage_median": medians, "coverage_gap_median": gaps}


def write_keyword_coverage(path: Path, fitted: dict, data_name: str, train_queries: int, proxies: dict,
                           excluded: int) -> None:
    """Adds the keyword coverage fit to the weights file that write_weights wrote."""
    saved = json.loads(path.read_text())
    best = fitted["best"]
    saved["config"]["keyword_coverage"] = {k: best[k] for k in ("top", "from", "boost", "gap_from", "gap_boost")}
    sizes = ", ".join(f"{len(queries)} {name}" for name, (queries, _) in proxies.items())
    saved["keyword_coverage_fit"] = {
        "fitted_on": f"{data_name} qrels/train.tsv ({train_queries} queries) and proxy questions ({sizes}) made "
                     f"from {data_name} documents (seed {PROXY_FIT_SEED}; the {excluded} documents judged in "
                     f"qrels/test.tsv excluded)",
        "rule": f"among points within {COVERAGE_TOLERANCE} of the best train nDCG@10, the best worst-proxy gap "
                "(hybrid - keyword on the worse proxy set); then the smaller boost, the higher start, the fewer chunks. "
                "First top/from/boost ('grid'), then with those held gap_from/gap_boost ('gap_grid')",
        "keyword_ndcg@10": fitted["keyword_ndcg@10"],
        "term_coverage_median": fitted["term_coverage_median"],
        "coverage_gap_median": fitted["coverage_gap_median"],
        "chosen": best, "grid": fitted["grid"], "gap_grid": fitted["gap_grid"]}
    path.write_text(json.dumps(saved, indent=2) + "\n")


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """Graded gains, log2 discount; the ideal ranking is the judged documents sorted by gain."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    hits = {doc for doc in ranked[:k] if relevant.get(doc, 0) > 0}
    return len(hits) / max(1, sum(1 for v in relevant.values() if v > 0))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---- index -----------------------------------------------------------------------------------
def build(corpus, output: Path, provider: str, vector_store: Path | None = None):
    options = BuildOptions(embedding_provider=provider,
                           vector_store_path=vector_store or tutorstack_home() / "graphrag" / "vectors",
                           max_chars=2000, overlap_chars=200)
    started = time.perf_counter()
    chunks = []
    for doc in corpus:
        title = doc.get("title") or ""
        blocks = markdown_blocks((f"# {title}\n\n" if title else "") + f"{doc['text']}\n")
        chunks.extend(chunk_file(doc["_id"], blocks, options))
    return assemble_and_write(output, chunks, {}, {}, options, None, started)


def open_retriever(index_root: Path, config: RetrievalConfig, reranker=None) -> Retriever:
    """As the service does: the manifest's models per leg, one thread for queries."""
    holder = IndexHolder(index_root, config, reranker=reranker)
    return holder._load().retriever


def chunks_to_documents(retriever: Retriever, chunk_positions, depth: int = 100) -> list[str]:
    ranked, seen = [], set()
    for position in chunk_positions:
        doc = retriever.index.chunks[position].path
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
            if len(ranked) == depth:
                break
    return ranked


def ranked_documents(retriever: Retriever, query: str, mode: str, depth: int = 100, rerank: bool = False):
    hits = retriever.search(query, top_k=depth + 20, mode=mode, rerank=rerank)
    return chunks_to_documents(retriever, [h.chunk_index for h in hits], depth)


def evaluate(retriever: Retriever, queries, qrels, mode: str, rerank: bool = False):
    """nDCG@10 and recall@100 over documents (a document scores as its best chunk), latency."""
    ndcgs, recalls, latencies, cpu = {}, [], [], []
    for query_id, text in queries.items():
        started, cpu_started = time.perf_counter(), time.process_time()
        ranked = ranked_documents(retriever, text, mode, rerank=rerank)
        latencies.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        ndcgs[query_id] = ndcg_at_k(ranked, qrels[query_id])
        recalls.append(recall_at_k(ranked, qrels[query_id]))
    return {"ndcg@10": statistics.mean(ndcgs.values()), "recall@100": statistics.mean(recalls),
            "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99),
            "cpu_p50_ms": statistics.median(cpu), "cpu_p99_ms": percentile(cpu, 0.99), "per_query": ndcgs}


def evaluate_dense_only(retriever: Retriever, queries, qrels) -> float | None:
    """The dense legs alone (weights keyword 0, graph 0): how good the embedder is by itself."""
    if not retriever.has_dense:
        return None
    scores = []
    for query_id, text in queries.items():
        signals, candidates, coverage, _ = retriever.signals(text)
        if not coverage:
            scores.append(0.0)
            continue
        fused = retriever.fuse(signals, candidates, coverage, {"keyword": 0, "graph": 0, "dense": 1}, "weighted")
        scores.append(ndcg_at_k(chunks_to_documents(retriever, top_items(fused, 120)), qrels[query_id]))
    return statistics.mean(scores)


# ---- fitting on train ------------------------------------------------------------------------
class CachedQuery(NamedTuple):
    """One query's signals, computed once and fused for every grid point of a fit."""
    query_id: str
    signals: dict      # each leg's scores at its own candidates (_Signals)
    z: dict            # for "zscore": every leg's z-score (over all the chunks it scores) at any leg's candidate
    candidates: dict
    coverage: dict
    extra: object      # extra(tokens, signals, candidates), where the caller asked for it


def cache_signals(retriever: Retriever, queries: dict, extra=None, progress=True) -> list[CachedQuery]:
    rows = []
    for n, (query_id, text) in enumerate(queries.items(), start=1):
        signals, candidates, coverage, _ = retriever.signals(text)
        kept = _Signals({name: {i: float(signals[name][i]) for i in ranking} for name, ranking in candidates.items()})
        union = list(dict.fromkeys(i for ranking in candidates.values() for i in ranking))
        z = {name: {i: float(values[i]) for i in union}
             for name, values in retriever.normalized_signals(signals, candidates).items()}
        rows.append(CachedQuery(query_id, kept, z, candidates, coverage,
                                extra(tokenize(text), signals, candidates) if extra else None))
        if progress and n % 200 == 0:
            print(f"[fit] signals {n}/{len(queries)}", file=sys.stderr, flush=True)
    return rows


def fuse_cached(retriever: Retriever, row: CachedQuery, weights: dict | None = None, fusion: str | None = None,
                **keyword_coverage) -> dict[int, float]:
    """Retriever.fuse over a cached query (`keyword_coverage`: fuse's term_coverage,
    keyword_coverage and coverage_gap)."""
    fusion = fusion or retriever.config.fusion
    if fusion == "zscore":
        legs = retriever.leg_weights(row.candidates, row.coverage, weights, **keyword_coverage)
        return zscore_fusion({name: row.z[name] for name in legs}, legs,
                             dict.fromkeys(i for name in legs for i in row.candidates[name]))
    return retriever.fuse(row.signals, row.candidates, row.coverage, weights, fusion, **keyword_coverage)


def fit(retriever: Retriever, queries, qrels, progress=True, grid=None) -> dict:
    """Grid search of fusion and leg weights on the train queries; the signals of each query
    are computed once and fused for every grid point (default: the fusions x GRID_* points)."""
    cached = cache_signals(retriever, queries, progress=progress)
    results = []
    if grid is None:
        grid = [(fusion, {"keyword": k, "graph": g, "dense": d}) for fusion in FUSIONS
                for k, g, d in itertools.product(GRID_KEYWORD, GRID_GRAPH, GRID_DENSE) if k or g]
    for fusion, weights in grid:
        total = 0.0
        for row in cached:
            fused = fuse_cached(retriever, row, weights, fusion)
            total += ndcg_at_k(chunks_to_documents(retriever, top_items(fused, 120)), qrels[row.query_id])
        results.append((total / len(cached), fusion, weights))
    results.sort(key=lambda r: (-r[0], r[1], sorted(r[2].items())))
    return {"best": results[0], "top5": results[:5], "points": len(results), "all": results}


def leg_providers_to_fit(provider: str, retriever: Retriever) -> dict[str, str]:
    """Dense legs of an `auto` plan that the train corpus's own build did not exercise (SciFact
    is English, so `dense_multi`, e5, is never built for it): leg name -> its model."""
    plan = AUTO_PLANS.get(provider, {})
    return {leg: leg_provider for leg, (leg_provider, _) in plan.items() if leg not in retriever.index.legs()}


def fit_leg(corpus, queries, qrels, leg_provider: str, config: RetrievalConfig, progress=True) -> dict:
    """A dense leg's own weight: the train corpus built with that leg's model alone, fused with
    the fitted fusion, keyword and graph weights held fixed, the dense weight from LEG_GRID."""
    with tempfile.TemporaryDirectory(prefix="graphrag-bench-leg-") as tmp:
        started = time.perf_counter()
        build(corpus, Path(tmp) / "index", leg_provider)
        build_seconds = time.perf_counter() - started
        retriever = open_retriever(Path(tmp) / "index", config)
    base = {k: config.hybrid_weights.get(k, 0.0) for k in ("keyword", "graph")}
    grid = [(config.fusion, {**base, "dense": d}) for d in LEG_GRID]
    fitted = fit(retriever, queries, qrels, progress, grid)
    fitted["build_seconds"] = build_seconds
    fitted["dense_only"] = evaluate_dense_only(retriever, queries, qrels)
    return fitted


class _Signals(dict):
    """Sparse stand-in for the score arrays: {leg: {chunk: score}} indexed as signals[leg][chunk]."""


def write_weights(path: Path, fitted: dict, data_name: str, train_queries: int, provider: str,
                  legs: dict[str, tuple[str, dict]] | None = None) -> None:
    """Writes the fusion fit and the dense legs' own weights (`legs`: leg -> (model, fit_leg's
    result); none: every dense leg uses the one dense weight); a reranker fit already in the
    file (bench_retrieval_rerank.py) is kept."""
    score, fusion, weights = fitted["best"]
    previous = json.loads(path.read_text()) if path.is_file() else {}
    kept = {k: v for k, v in previous.get("config", {}).items() if k.startswith("rerank_")}
    leg_config = {"leg_weights": {leg: leg_fit["best"][2]["dense"] for leg, (_, leg_fit) in legs.items()}} \
        if legs else {}
    leg_record = {"leg_fit": {leg: {
        "model": model, "fitted_on": f"{data_name} qrels/train.tsv ({train_queries} queries), "
                                     f"EMBEDDING_PROVIDER={model}, fusion and keyword/graph weights held at the fit",
        "train_ndcg@10": round(leg_fit["best"][0], 4),
        "dense_only_train_ndcg@10": round(leg_fit["dense_only"], 4) if leg_fit.get("dense_only") is not None else None,
        "build_seconds": round(leg_fit["build_seconds"], 1),
        "grid": [{"dense": w["dense"], "train_ndcg@10": round(s, 4)}
                 for s, _, w in sorted(leg_fit["all"], key=lambda r: r[2]["dense"])]}
        for leg, (model, leg_fit) in legs.items()}} if legs else {}
    path.write_text(json.dumps({**{k: v for k, v in previous.items() if k == "rerank_fit"},
        "fitted_on": f"{data_name} qrels/train.tsv ({train_queries} queries), EMBEDDING_PROVIDER={provider}",
        "objective": "mean nDCG@10 over train queries (documents = best chunk)",
        "train_ndcg@10": round(score, 4),
        "grid": {"fusion": list(FUSIONS), "keyword": GRID_KEYWORD, "graph": GRID_GRAPH, "dense": GRID_DENSE,
                 "points": fitted["points"]},
        "runner_up": [{"train_ndcg@10": round(s, 4), "fusion": f, "weights": w} for s, f, w in fitted["top5"][1:]],
        "config": {"fusion": fusion, "hybrid_weights": weights, **leg_config, **kept},
        **leg_record,
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")


# ---- main ------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", help="BEIR-format folder (repeatable)")
    parser.add_argument("--embedding-provider", default=os.environ.get("EMBEDDING_PROVIDER") or "auto")
    parser.add_argument("--modes", default="keyword,graph,hybrid")
    parser.add_argument("--fit", action="store_true", help="fit weights on train queries, write the weights file")
    parser.add_argument("--fit-legs", default="all",
                        help="with --fit: the dense legs of the plan that the train corpus does not build (auto: "
                             "dense_multi, e5) also get their own weight, each from a build of the train corpus "
                             "with that leg's model (cold: e5 embeds SciFact in ~45 min on 2 cores; cached "
                             "afterwards); 'none': every leg uses the one dense weight; or a comma list of legs")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_FILE)
    parser.add_argument("--compare", action="append", metavar="PROVIDER=WEIGHTS",
                        help=f"another configuration to measure in the same run (default {DEFAULT_COMPARE[0]}; "
                             "'none' for none)")
    parser.add_argument("--reranker", default=os.environ.get("RERANKER_PROVIDER", ""),
                        help="also measure hybrid with this reranker (graphrag/rerank.py), on the test split")
    parser.add_argument("--rerank-queries", type=int, default=0,
                        help="measure the reranker on this many test queries (seeded sample; 0: all), beside "
                             "hybrid without it on the same queries")
    parser.add_argument("--cold", action="store_true",
                        help="build the first corpus with an empty vector store (a cold build)")
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to write ('' for none)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    folders = [f for f in (args.data or DEFAULT_DATA)]
    present = [f for f in folders if (f / "corpus.jsonl").is_file()]
    for missing in set(folders) - set(present):
        print(f"no corpus at {missing}: skipped")
    if not present:
        return 0
    compare = [c for c in (args.compare or DEFAULT_COMPARE) if c.lower() != "none"]
    configs = [(args.embedding_provider, args.weights, True)]
    for item in compare:
        provider, _, weights = item.partition("=")
        configs.append((provider, Path(weights) if weights else args.weights, False))
    reranker = load_reranker(args.reranker) if args.reranker else None
    load_start = os.getloadavg()
    lines = [f"# Retrieval bench\n", f"`python bench/bench_retrieval.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
             + f" on "
             f"{os.cpu_count()} CPU cores (load average at start {load_start[0]:.1f}), "
             f"EMBEDDING_PROVIDER={args.embedding_provider}, compared with "
             f"{', '.join(p for p, _, main in configs if not main) or 'nothing'}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"]
    figures: dict = {}
    fitted_now = False
    for n_folder, folder in enumerate(present):
        name = folder.name
        corpus, test_queries, test_qrels = load_beir(folder, "test")
        has_train = (folder / "qrels" / "train.tsv").is_file()
        splits = {"test": (test_queries, test_qrels)}
        if has_train:
            _, train_queries, train_qrels = load_beir(folder, "train")
            splits["train"] = (train_queries, train_qrels)
            # proxy questions (never fitted on): does the dense leg keep away from questions that
            # copy a passage's words, or ask about two passages? The fit sets' documents are excluded.
            judged = {doc for rel in test_qrels.values() for doc in rel}
            fit_proxies = proxy_sets(corpus, PROXY_FIT_SEED, judged)
            used = {doc for _, qrels in fit_proxies.values() for rel in qrels.values() for doc in rel}
            for proxy, held_out in proxy_sets(corpus, PROXY_HELD_OUT_SEED, used).items():
                splits[f"{proxy} (held-out)"] = held_out
        table = ["| config | split | mode | nDCG@10 | R@100 | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |",
                 "|---|---|---|---|---|---|---|---|---|"]
        heads, notes = [], []
        figures[name] = {"configs": {}}
        for provider, weights, primary in configs:
            cold = args.cold and primary and n_folder == 0
            with tempfile.TemporaryDirectory(prefix="graphrag-bench-") as tmp:
                index_root = Path(tmp) / "index"
                load_before = os.getloadavg()[0]
                cpu_started = time.process_time()
                summary = build(corpus, index_root, provider, Path(tmp) / "vectors" if cold else None)
                build_cpu = time.process_time() - cpu_started
                load_after = os.getloadavg()[0]
                size = index_size_bytes(index_root)
                retriever = open_retriever(index_root, RetrievalConfig.from_file(weights),
                                           reranker if primary else None)
            if primary and has_train and args.fit and not fitted_now:
                fitted = fit(retriever, splits["train"][0], splits["train"][1])
                s, f, w = fitted["best"]
                print(f"fitted on {name} train ({len(splits['train'][0])} queries): {f} {w} -> nDCG@10 {s:.4f}",
                      flush=True)
                leg_fits = {}
                wanted = leg_providers_to_fit(provider, retriever)
                if args.fit_legs != "all":
                    chosen = {x.strip() for x in args.fit_legs.split(",")}
                    wanted = {leg: p for leg, p in wanted.items() if leg in chosen}
                base = RetrievalConfig(fusion=f, hybrid_weights=w)
                for leg, leg_provider in wanted.items():
                    leg_fit = fit_leg(corpus, splits["train"][0], splits["train"][1], leg_provider, base)
                    leg_fits[leg] = (leg_provider, leg_fit)
                    print(f"fitted {leg} ({leg_provider}) on {name} train: dense {leg_fit['best'][2]['dense']} "
                          f"-> nDCG@10 {leg_fit['best'][0]:.4f} (build {leg_fit['build_seconds']:.0f} s)", flush=True)
                write_weights(weights, fitted, name, len(splits["train"][0]), provider, leg_fits)
                retriever.config = RetrievalConfig.from_file(weights)
                coverage_fit = fit_keyword_coverage(retriever, splits["train"], fit_proxies)
                write_keyword_coverage(weights, coverage_fit, name, len(splits["train"][0]), fit_proxies,
                                       len(judged))
                retriever.config = RetrievalConfig.from_file(weights)
                print(f"fitted keyword coverage boost: {coverage_fit['best']} (proxies' keyword alone "
                      f"{coverage_fit['keyword_ndcg@10']})", flush=True)
                fitted_now = True
                print(f"wrote {weights}")
            legs = retriever.index.manifest.get("embedding") or {}
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stage_seconds.items())
            heads.append(
                f"- `{provider}`{' (cold: empty vector store)' if cold else ''}: dense legs "
                + (", ".join(f"{k}={v['name']} ({v['chunks']} chunks)" for k, v in legs.get("legs", {}).items())
                   or legs.get("name", "none"))
                + f". Build {summary.seconds:.1f} s wall, {build_cpu:.1f} s CPU ({stages}; load average "
                + f"{load_before:.1f} before, {load_after:.1f} after), index {size / 1e6:.1f} MB. "
                + f"Weights: {retriever.config.source} ({retriever.config.fusion} {retriever.config.hybrid_weights}"
                + (f", dense legs' own {retriever.config.leg_weights}" if retriever.config.leg_weights else "")
                + (f", keyword coverage boost {retriever.config.keyword_coverage}"
                   if retriever.config.keyword_coverage else "") + ").")
            record = {"build_seconds": summary.seconds, "build_cpu_seconds": build_cpu, "cold": cold,
                      "load_average_before_after": [load_before, load_after], "stage_seconds": summary.stage_seconds,
                      "index_bytes": size, "chunks": summary.chunks, "splits": {}}
            figures[name]["configs"][provider] = record
            figures[name]["documents"], figures[name]["chunks"] = len(corpus), summary.chunks
            runs = [(mode, False) for mode in args.modes.split(",")] if primary else [("hybrid", False)]
            for split, (queries, qrels) in splits.items():
                split_runs = [(m, r, queries, "") for m, r in runs]
                if primary and reranker and split == "test":
                    sample, tag = queries, ""
                    if 0 < args.rerank_queries < len(queries):
                        ids = sorted(queries)
                        random.Random(13).shuffle(ids)
                        sample = {q: queries[q] for q in sorted(ids[: args.rerank_queries])}
                        tag = f" ({len(sample)} sampled)"
                        split_runs.append(("hybrid", False, sample, tag))
                    split_runs.append(("hybrid", True, sample, tag))
                for mode, rerank, split_queries, tag in split_runs:
                    result = evaluate(retriever, split_queries, qrels, mode, rerank)
                    label = mode + (" +rerank" if rerank else "") + tag
                    per_query = result.pop("per_query")
                    record["splits"].setdefault(split, {})[label] = result
                    table.append(f"| {provider} | {split} | {label} | {result['ndcg@10']:.3f} | "
                                 f"{result['recall@100']:.3f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | "
                                 f"{result['cpu_p50_ms']:.1f} | {result['cpu_p99_ms']:.1f} |")
                    if split == "test" and mode == "hybrid" and not rerank and not tag:
                        by_lang: dict[str, list[float]] = {}
                        for qid, value in per_query.items():
                            by_lang.setdefault(primary_language(queries[qid]), []).append(value)
                        record["test_hybrid_by_query_language"] = {k: (len(v), statistics.mean(v))
                                                                   for k, v in by_lang.items()}
                dense = evaluate_dense_only(retriever, queries, qrels)
                if dense is not None:
                    record["splits"][split]["dense only"] = {"ndcg@10": dense}
                    table.append(f"| {provider} | {split} | dense legs only | {dense:.3f} | | | | | |")
            by_lang = record.get("test_hybrid_by_query_language", {})
            if len(by_lang) > 1:
                notes.append(f"Test hybrid nDCG@10 by query language, `{provider}`: " + ", ".join(
                    f"{k} {v[1]:.3f} ({v[0]} queries)" for k, v in sorted(by_lang.items())))
        head = (f"## {name}\n\n{len(corpus)} documents, {figures[name]['chunks']} chunks; test {len(test_queries)} "
                f"queries" + (f", train {len(splits['train'][0])}" if has_train else "") + ".\n\n" + "\n".join(heads))
        block = head + "\n\n" + "\n".join(table) + "\n" + ("\n" + "\n\n".join(notes) + "\n" if notes else "")
        print(block, flush=True)
        lines.append(block)
    if reranker is not None:
        config = RetrievalConfig.from_file(args.weights)
        lines.append(f"Reranker {reranker.name}: top {config.rerank_candidates} fused hits, "
                     f"{getattr(reranker, 'max_length', '?')} tokens per pair, blend {config.rerank_weight}, "
                     f"{os.environ.get('RERANK_THREADS') or 1} thread(s).\n")
    lines.append(f"Load average at the end {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min).\n")
    lines.append(ANCHORS + "\n")
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
