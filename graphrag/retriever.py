"""Query-time retrieval over a loaded index: keyword (BM25), graph (keyword hits expanded
along the term graph and community) and hybrid (keyword + graph + dense, fused)."""

from __future__ import annotations

import fnmatch
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from graphrag.dense import Embedder
from graphrag.fusion import (reciprocal_rank_fusion, top_items, weighted_score_fusion, zscore_fusion,
                             zscore_normalize)
from graphrag.index_store import DenseLeg, IndexData
from graphrag.language import coverage, language_shares
from graphrag.text import phrase_runs, surface_forms, tokenize

Mode = Literal["keyword", "graph", "hybrid"]
MODES: tuple[str, ...] = ("keyword", "graph", "hybrid")


WEIGHTS_FILE = Path(__file__).with_name("retrieval_weights.json")


@dataclass
class RetrievalConfig:
    """Structural settings live here; the fusion weights come from a fitted file
    (graphrag/retrieval_weights.json, written by `bench/bench_retrieval.py --fit` from SciFact's
    *train* queries), never from constants in code. Without the file, hybrid fuses with equal
    weights (the unfitted baseline)."""

    seed_chunks: int = 5  # keyword hits whose key terms seed the expansion
    expansion_terms: int = 10  # graph neighbours added to the query
    # The expansion signal's share in graph mode: small, so keyword hits keep their order and
    # linked chunks come in after them.
    expansion_weight: float = 0.3
    community_bonus: float = 0.05  # pull toward the seeds' dominant community
    candidates: int = 100  # per retriever, before fusion
    # "weighted": min-max over each leg's own candidates; "zscore": z-scores over all the chunks
    # a leg scores (graphrag.fusion.zscore_normalize); "rrf": reciprocal ranks. The fit chooses.
    fusion: Literal["rrf", "weighted", "zscore"] = "weighted"
    # Leg weights; a dense leg's weight is further multiplied by the share of the query's
    # language that its model covers (graphrag.language), so an English-only model gives a
    # Chinese query no dense signal at all instead of a misleading one.
    hybrid_weights: dict[str, float] = field(default_factory=lambda: {"keyword": 1.0, "graph": 1.0, "dense": 1.0})
    # A dense leg's own weight, fitted per model on the same train queries with the keyword and
    # graph weights above held fixed (`bench_retrieval.py --fit`: e5 behind "dense_multi" gets a
    # weight of its own instead of the one fitted for bge-small); a leg not listed uses "dense".
    leg_weights: dict[str, float] = field(default_factory=dict)
    # The keyword weight grows with the query's term coverage (Retriever.term_coverage: the
    # idf-weighted share of its distinct terms that the best `top` keyword chunks contain
    # together): keyword + boost * clip((coverage - from) / (1 - from), 0, 1). A question that
    # copies a passage's words (extractive, SQuAD/CMRC-style), or asks about two passages at once,
    # is what BM25 answers well and a single query vector does not, and the dense-heavy weights
    # fitted on SciFact's paraphrased claims would pull it below keyword retrieval. A second term
    # adds gap_boost * clip((gap - gap_from) / (1 - gap_from), 0, 1), where gap is how much more of
    # the query the keyword leg's best chunks contain than the dense legs' best chunks (the dense
    # leg has missed what the words point to, as one vector for a two-topic question does).
    # {"top", "from", "boost", "gap_from", "gap_boost"}, fitted by `bench_retrieval.py --fit`;
    # empty: no boost.
    keyword_coverage: dict[str, float] = field(default_factory=dict)
    rerank_candidates: int = 30  # how many fused hits a reranker rescores
    # How the reranker's score meets the first stage's: None orders the candidates by the
    # cross-encoder alone; a number w orders them by minmax(fused) + w * minmax(cross-encoder).
    rerank_weight: float | None = None
    # Tokens per (query, passage) pair the cross-encoder reads (None: the reranker's own
    # default); RERANK_MAX_TOKENS overrides it per deployment.
    rerank_max_tokens: int | None = None
    source: str = "defaults (no fitted weights file)"

    @classmethod
    def from_file(cls, path: Path | str | None = None) -> "RetrievalConfig":
        """The fitted weights file (default: graphrag/retrieval_weights.json); defaults when absent."""
        path = Path(path) if path else WEIGHTS_FILE
        if not path.is_file():
            return cls()
        fitted = json.loads(path.read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__} - {"source"}
        config = cls(**{k: v for k, v in fitted.get("config", {}).items() if k in known})
        config.source = f"{path.name}: {fitted.get('fitted_on', 'unknown data')}"
        return config


@dataclass
class Hit:
    chunk_index: int
    score: float
    why: dict


@dataclass
class _Expansion:
    weights: dict[str, float]  # expansion term -> weight in (0, 1]
    paths: dict[str, list[str]]  # expansion term -> how the graph reached it
    community: int  # dominant community of the keyword seeds, -1 if none


def dense_leg_weight(weights: dict[str, float], leg: str) -> float:
    """A dense leg's weight: its own where `weights` names the leg, else the one "dense" weight."""
    return weights.get(leg, weights.get("dense", 0.0))


def _ramp(value: float, start: float) -> float:
    start = min(float(start), 0.999)
    return min(1.0, max(0.0, (value - start) / (1.0 - start)))


def keyword_boost(term_coverage: float, setting: dict[str, float] | None, coverage_gap: float = 0.0) -> float:
    """What the keyword weight gains at this term coverage and coverage gap
    (RetrievalConfig.keyword_coverage)."""
    if not setting:
        return 0.0
    boost = float(setting.get("boost", 0.0)) * _ramp(term_coverage, setting.get("from", 1.0))
    return boost + float(setting.get("gap_boost", 0.0)) * _ramp(coverage_gap, setting.get("gap_from", 0.0))


class Retriever:
    def __init__(self, index: IndexData, embedder: Embedder | None = None, config: RetrievalConfig | None = None,
                 embedders: dict[str, Embedder | None] | None = None, reranker=None):
        """`embedder` is the one model of a single-provider index; `embedders` maps the legs of an
        EMBEDDING_PROVIDER=auto index (leg name -> model, None where the model could not load)."""
        self.index = index
        self.embedder = embedder
        self.embedders = dict(embedders or {})
        if embedder is not None:
            self.embedders.setdefault("dense", embedder)
        self.config = config or RetrievalConfig.from_file()
        self.reranker = reranker
        if reranker is not None and hasattr(reranker, "use_fitted_max_tokens"):
            reranker.use_fitted_max_tokens(self.config.rerank_max_tokens)
        self.vocabulary = set(index.bm25.vocab_dict)
        self.chunk_position = {chunk.id: i for i, chunk in enumerate(index.chunks)}
        self.chunk_community = np.asarray(index.chunk_community or [-1] * len(index.chunks), dtype=np.int64)
        # documents per term (bm25s keeps postings per vocabulary id), and from it each
        # vocabulary term's idf once per index, for term_coverage
        self.document_frequency = np.diff(np.asarray(index.bm25.scores["indptr"]))
        total = len(index.chunks)
        self.vocabulary_idf = np.log1p((total - self.document_frequency + 0.5) / (self.document_frequency + 0.5))
        self.missing_term_idf = math.log1p((total + 0.5) / 0.5)  # a term the corpus lacks: df 0
        graph = index.cooccurrence
        self.term_strength = {term: float(graph.degree(term, weight="weight")) for term in graph}

    def dense_legs(self) -> dict[str, tuple[DenseLeg, Embedder]]:
        """Legs that have both vectors and a loaded model."""
        return {name: (leg, self.embedders[name]) for name, leg in self.index.legs().items()
                if self.embedders.get(name) is not None}

    @property
    def has_dense(self) -> bool:
        return bool(self.dense_legs())

    # ---- public -------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 5, mode: Mode = "hybrid", paths: list[str] | None = None,
               rerank: bool = False) -> list[Hit]:
        return self.search_with_legs(query, top_k, mode, paths, rerank)[0]

    def search_with_legs(self, query: str, top_k: int = 5, mode: Mode = "hybrid", paths: list[str] | None = None,
                         rerank: bool = False) -> tuple[list[Hit], list[str]]:
        """The hits and the legs that shaped them ("bm25", "graph", "dense", "rerank")."""
        if not self.index.chunks:
            return [], []
        mask = self.path_mask(paths)
        query_tokens = _QueryTokens(tokenize(query), surface_forms(query))
        rerank = rerank and self.reranker is not None and self.reranker_understands(query)
        if mode == "keyword":
            scores = self.keyword_scores(query_tokens, mask)
            hits = [self._hit(i, float(scores[i]), query_tokens, {"keyword": rank}) for rank, i in
                    enumerate(_top_positive(scores, top_k), start=1)]
            legs = ["bm25"]
        elif mode == "graph":
            scores, expansion = self.graph_scores(query, query_tokens, mask)
            hits = [self._hit(i, float(scores[i]), query_tokens, {"graph": rank}, expansion) for rank, i in
                    enumerate(_top_positive(scores, top_k), start=1)]
            legs = ["bm25", "graph"]
        elif mode == "hybrid":
            depth = max(top_k, self.config.rerank_candidates) if rerank and self.reranker else top_k
            hits, legs = self.hybrid(query, query_tokens, depth, mask)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        if rerank and self.reranker is not None and hits:
            # only the top `rerank_candidates` are rescored (as fitted); deeper hits keep their order
            n = self.config.rerank_candidates
            hits = self.rerank(query, hits[:n]) + hits[n:]
            legs = [*legs, "rerank"]
        return hits[:top_k], legs

    def reranker_understands(self, query: str) -> bool:
        """A cross-encoder reranks only queries mostly in its languages (the packaged one is
        English: a Chinese query keeps its first-stage order, and `legs` says so)."""
        languages = getattr(self.reranker, "languages", None)
        return languages is None or coverage(language_shares(query), languages) >= 0.5

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        scores = self.reranker.score(query, [self.index.chunks[h.chunk_index].index_text for h in hits])
        weight = self.config.rerank_weight
        if weight is not None:
            scores = _min_max([h.score for h in hits]) + float(weight) * _min_max(scores)
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
        reranked = []
        for rank, i in enumerate(order, start=1):
            hit = hits[i]
            hit.why["ranks"]["rerank"] = rank
            reranked.append(Hit(hit.chunk_index, float(scores[i]), hit.why))
        return reranked

    def path_mask(self, paths: list[str] | None) -> np.ndarray | None:
        """A filter entry matches a path by prefix ("course_reader/") or by glob ("*.md")."""
        if not paths:
            return None
        return np.fromiter((any(c.path.startswith(p) or fnmatch.fnmatch(c.path, p) for p in paths)
                            for c in self.index.chunks), dtype=bool, count=len(self.index.chunks))

    # ---- the three signals ----------------------------------------------------------------------
    def keyword_scores(self, query_tokens: list[str], mask: np.ndarray | None) -> np.ndarray:
        known = [t for t in dict.fromkeys(query_tokens) if t in self.vocabulary and t]
        if not known:
            return np.zeros(len(self.index.chunks), dtype=np.float32)
        scores = np.asarray(self.index.bm25.get_scores(known), dtype=np.float32)[: len(self.index.chunks)]
        return scores if mask is None else np.where(mask, scores, 0.0)

    def graph_scores(self, query: str, query_tokens: list[str],
                     mask: np.ndarray | None) -> tuple[np.ndarray, _Expansion]:
        """Keyword score plus chunks reached through expansion terms: neighbours of the query's
        terms in the co-occurrence graph and key terms of the top keyword hits. This pulls in
        chunks that share no word with the query but talk about the same thing."""
        config = self.config
        keyword = self.keyword_scores(query_tokens, mask)
        seeds = _top_positive(keyword, config.seed_chunks)
        expansion = self.expand(query, query_tokens, seeds)
        reached = np.zeros_like(keyword)
        for term, weight in expansion.weights.items():
            for node in self.index.chunk_terms.neighbors(("term", term)):
                reached[self.chunk_position[node[1]]] += weight * self.index.term_idf.get(term, 1.0)
        if mask is not None:
            reached = np.where(mask, reached, 0.0)
        score = _unit(keyword) + config.expansion_weight * _unit(reached)
        if expansion.community >= 0:
            in_community = (self.chunk_community == expansion.community) & (score > 0)
            score = score + config.community_bonus * in_community
        return score.astype(np.float32), expansion

    def dense_weights(self, query: str) -> dict[str, float]:
        """Each dense leg's share of the dense weight for this query: every language of the
        query goes to the most specific loaded leg that understands it (an English model for
        English, the multilingual one for Chinese); a language no leg understands gives none."""
        shares = language_shares(query) or {"en": 1.0}
        legs = self.dense_legs()
        out: dict[str, float] = {}
        for lang, share in shares.items():
            able = [name for name, (leg, _) in legs.items() if lang in leg.languages]
            if able:
                best = min(able, key=lambda name: (len(legs[name][0].languages), name))
                out[best] = out.get(best, 0.0) + share
        return {name: round(weight, 4) for name, weight in out.items() if weight > 0}

    def dense_scores(self, query: str, mask: np.ndarray | None, leg_name: str | None = None) -> np.ndarray | None:
        """Cosine scores of one leg (default: the only or first leg) over all chunks; chunks the
        leg has no vector for get -1 and are never its candidates."""
        legs = self.dense_legs()
        if not legs or not query.strip():
            return None
        leg, embedder = legs[leg_name] if leg_name else next(iter(legs.values()))
        query_vector = embedder.encode_queries([query])[0]
        scores = np.full(len(self.index.chunks), -1.0, dtype=np.float32)
        scores[leg.rows] = leg.vectors @ query_vector
        if mask is not None:
            scores = np.where(mask, scores, -1.0)
        return scores

    def signals(self, query: str, query_tokens: list[str] | None = None, mask: np.ndarray | None = None):
        """Every leg's scores and candidates for one query (the bench fits weights on these)."""
        n = self.config.candidates
        query_tokens = query_tokens if query_tokens is not None else _QueryTokens(tokenize(query), surface_forms(query))
        keyword = self.keyword_scores(query_tokens, mask)
        graph, expansion = self.graph_scores(query, query_tokens, mask)
        candidates = {"keyword": _top_positive(keyword, n), "graph": _top_positive(graph, n)}
        signals = {"keyword": keyword, "graph": graph}
        coverage = self.dense_weights(query)
        for name in coverage:
            dense = self.dense_scores(query, mask, name)
            leg = self.index.legs()[name]
            allowed = leg.rows if mask is None else leg.rows[mask[leg.rows]]
            candidates[name] = _top_indices(dense, n, allowed)
            signals[name] = dense
        return signals, candidates, coverage, expansion

    def term_coverage(self, query_tokens: list[str], keyword: np.ndarray, top: int = 1) -> float:
        """The idf-weighted share of the query's distinct terms that its best `top` keyword
        chunks contain together (0 without a keyword hit). Near 1 when the query copies a
        passage's words (top 1) or two passages' (top 2); a term the corpus lacks counts as
        missing, with the highest idf."""
        if keyword.size == 0 or float(keyword.max()) <= 0:
            return 0.0
        return self.chunks_coverage(query_tokens, _top_positive(keyword, max(1, top)))

    def coverage_gap(self, query_tokens: list[str], signals: dict, candidates: dict, top: int = 1,
                     keyword_coverage: float | None = None) -> float:
        """How much more of the query (term_coverage) the keyword leg's best `top` chunks contain
        than the dense legs' best `top` chunks (each dense leg of this query, together); 0
        without a dense leg. `keyword_coverage` is term_coverage's answer where the caller has it."""
        dense = [i for name in signals if name not in ("keyword", "graph") for i in candidates.get(name, [])[:top]]
        if not dense:
            return 0.0
        if keyword_coverage is None:
            keyword_coverage = self.term_coverage(query_tokens, signals["keyword"], top)
        return max(0.0, keyword_coverage - self.chunks_coverage(query_tokens, dense))

    def chunks_coverage(self, query_tokens: list[str], chunk_indices) -> float:
        """The idf-weighted share of the query's distinct terms that these chunks contain together."""
        terms = [t for t in dict.fromkeys(query_tokens) if t]
        if not terms or not len(chunk_indices):
            return 0.0
        best = set().union(*(self.index.chunks[i].tokens for i in chunk_indices))
        vocab = self.index.bm25.vocab_dict
        weights = {term: float(self.vocabulary_idf[vocab[term]]) if term in vocab else self.missing_term_idf
                   for term in terms}
        return sum(w for t, w in weights.items() if t in best) / sum(weights.values())

    def fitted_weights(self) -> dict[str, float]:
        """The configured weights: keyword, graph, "dense" and any dense leg's own weight."""
        return {**self.config.hybrid_weights, **self.config.leg_weights}

    def leg_weights(self, candidates: dict, coverage: dict[str, float],
                    weights: dict[str, float] | None = None, term_coverage: float = 0.0,
                    keyword_coverage: dict[str, float] | None = None, coverage_gap: float = 0.0) -> dict[str, float]:
        """Each leg's weight for this query: the fitted weight (a dense leg's own where `weights`
        names the leg, else "dense"), a dense leg's times the share of the query's language it
        covers, the keyword leg's raised by its term coverage and coverage gap (keyword_boost;
        default setting: the configured one); legs without candidates drop out. Without `weights`, the configured
        ones."""
        weights = dict(weights or self.fitted_weights())
        setting = self.config.keyword_coverage if keyword_coverage is None else keyword_coverage
        keyword = weights.get("keyword", 0.0)
        if keyword > 0:  # a mode that leaves the keyword leg out (dense alone) stays without it
            keyword += keyword_boost(term_coverage, setting, coverage_gap)
        leg_weights = {"keyword": keyword, "graph": weights.get("graph", 0.0)}
        for name, share in coverage.items():
            leg_weights[name] = dense_leg_weight(weights, name) * share
        leg_weights = {name: w for name, w in leg_weights.items() if w > 0 and candidates.get(name)}
        if not leg_weights:
            leg_weights = {name: 1.0 for name in ("keyword", "graph") if candidates.get(name)}
        return leg_weights

    def scored_rows(self, leg: str, mask: np.ndarray | None = None) -> np.ndarray | None:
        """Rows a leg gives a score (a dense leg: the chunks it has vectors for), within the path
        filter; None: every chunk."""
        legs = self.index.legs()
        rows = legs[leg].rows if leg in legs and self.embedders.get(leg) is not None else None
        if mask is None:
            return rows
        return np.flatnonzero(mask) if rows is None else rows[mask[rows]]

    def normalized_signals(self, signals: dict, names, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """z-normalised full score arrays of `names` (for fusion "zscore")."""
        return {name: zscore_normalize(signals[name], self.scored_rows(name, mask)) for name in names}

    def fuse(self, signals: dict, candidates: dict, coverage: dict[str, float],
             weights: dict[str, float] | None = None, fusion: str | None = None,
             mask: np.ndarray | None = None, term_coverage: float = 0.0,
             keyword_coverage: dict[str, float] | None = None, coverage_gap: float = 0.0) -> dict[int, float]:
        leg_weights = self.leg_weights(candidates, coverage, weights, term_coverage, keyword_coverage, coverage_gap)
        fusion = fusion or self.config.fusion
        if fusion == "rrf":
            return reciprocal_rank_fusion({k: candidates[k] for k in leg_weights}, leg_weights)
        if fusion == "zscore":
            items = dict.fromkeys(i for name in leg_weights for i in candidates[name])
            return zscore_fusion(self.normalized_signals(signals, leg_weights, mask), leg_weights, items)
        return weighted_score_fusion({name: {i: float(signals[name][i]) for i in candidates[name]}
                                      for name in leg_weights}, leg_weights)

    def hybrid(self, query: str, query_tokens: list[str], top_k: int,
               mask: np.ndarray | None) -> tuple[list[Hit], list[str]]:
        signals, candidates, coverage, expansion = self.signals(query, query_tokens, mask)
        top = int(self.config.keyword_coverage.get("top", 1))
        term_coverage = self.term_coverage(query_tokens, signals["keyword"], top)
        gap = self.coverage_gap(query_tokens, signals, candidates, top, keyword_coverage=term_coverage) \
            if self.config.keyword_coverage.get("gap_boost") else 0.0
        fused = self.fuse(signals, candidates, coverage, mask=mask, term_coverage=term_coverage, coverage_gap=gap)
        ranks = {name: {item: r for r, item in enumerate(ranking, start=1)} for name, ranking in candidates.items()}
        hits = []
        for i in top_items(fused, top_k):
            leg_ranks = {("dense" if name not in ("keyword", "graph") and len(coverage) == 1 else name):
                         ranks[name].get(i) for name in candidates}
            hits.append(self._hit(i, fused[i], query_tokens, leg_ranks, expansion))
        weights = self.fitted_weights()
        dense_used = any(dense_leg_weight(weights, name) > 0 for name in coverage)
        legs = ["bm25", "graph"] + (["dense"] if dense_used else [])
        return hits, legs

    # ---- graph expansion ------------------------------------------------------------------------
    def expand(self, query: str, query_tokens: list[str], seeds: list[int]) -> _Expansion:
        graph = self.index.cooccurrence
        query_terms = set(query_tokens) | {f"{a} {b}" for run in phrase_runs(query) for a, b in zip(run, run[1:])}
        weights: Counter = Counter()
        paths: dict[str, list[str]] = {}
        best_link: dict[str, float] = {}
        for term in sorted(query_terms):
            if term not in graph:
                continue
            for neighbour, edge in graph[term].items():
                link = edge["weight"] / math.sqrt(self.term_strength[term] * self.term_strength[neighbour])
                weights[neighbour] += link
                if link > best_link.get(neighbour, 0.0):
                    best_link[neighbour] = link
                    paths[neighbour] = [f"query term '{self._label(term)}'",
                                        f"co-occurs with '{self._label(neighbour)}'"]
        community_votes: Counter = Counter()
        for rank, seed in enumerate(seeds, start=1):
            community_votes[int(self.chunk_community[seed])] += 1.0 / rank
            for term in self.index.key_terms[seed]:
                weights[term] += 0.5 / rank
                paths.setdefault(term, [f"keyword hit {self.index.chunks[seed].id}",
                                        f"key term '{self._label(term)}'"])
        for term in query_terms:
            weights.pop(term, None)
        chosen = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[: self.config.expansion_terms]
        top = chosen[0][1] if chosen else 1.0
        community_votes.pop(-1, None)
        community = min(community_votes, key=lambda c: (-community_votes[c], c)) if community_votes else -1
        return _Expansion({t: w / top for t, w in chosen}, {t: paths[t] for t, _ in chosen}, community)

    # ---- explanation ----------------------------------------------------------------------------
    def _hit(self, position: int, score: float, query_tokens: list[str], ranks: dict,
             expansion: _Expansion | None = None) -> Hit:
        chunk = self.index.chunks[position]
        chunk_tokens = set(chunk.tokens)
        written = getattr(query_tokens, "written", {})
        why: dict = {"matched_terms": [written.get(t) or self._label(t)
                                       for t in dict.fromkeys(query_tokens) if t in chunk_tokens],
                     "ranks": {k: v for k, v in ranks.items() if v is not None}}
        if expansion is not None:
            linked = [t for t in self.index.key_terms[position] if t in expansion.weights]
            if linked:
                why["expanded_terms"] = [self._label(t) for t in linked]
                why["graph_path"] = [*expansion.paths[linked[0]], f"chunk {chunk.id}"]
            community = int(self.chunk_community[position])
            if community >= 0:
                why["community"] = community
                why["same_community_as_keyword_hits"] = community == expansion.community
        return Hit(position, score, why)

    def _label(self, term: str) -> str:
        return self.index.term_labels.get(term, term)


class _QueryTokens(list):
    """The query's tokens, remembering how the user wrote each one (for `why`)."""

    def __init__(self, tokens: list[str], written: dict[str, str]):
        super().__init__(tokens)
        self.written = written


def _min_max(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _unit(scores: np.ndarray) -> np.ndarray:
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else scores


def _top_positive(scores: np.ndarray, k: int) -> list[int]:
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    order = positive[np.lexsort((positive, -scores[positive]))]
    return order[:k].tolist()


def _top_indices(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
    pool = allowed if allowed is not None else np.arange(scores.size)
    if pool.size == 0:
        return []
    order = pool[np.lexsort((pool, -scores[pool]))]
    return order[:k].tolist()
