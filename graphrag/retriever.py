"""Query-time retrieval over a loaded index: keyword (BM25), graph (keyword hits expanded
along the term graph and community) and hybrid (keyword + graph + dense, fused)."""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from graphrag.dense import Embedder
from graphrag.fusion import reciprocal_rank_fusion, top_items, weighted_score_fusion
from graphrag.index_store import IndexData
from graphrag.text import phrase_runs, surface_forms, tokenize

Mode = Literal["keyword", "graph", "hybrid"]
MODES: tuple[str, ...] = ("keyword", "graph", "hybrid")


@dataclass
class RetrievalConfig:
    """Defaults were tuned on SciFact (see bench/bench_retrieval.py and docs/graphrag.md)."""

    seed_chunks: int = 5  # keyword hits whose key terms seed the expansion
    expansion_terms: int = 10  # graph neighbours added to the query
    # The expansion signal's share in graph mode: small, so keyword hits keep their order and
    # linked chunks come in after them (on SciFact 0.0-0.5 all give nDCG@10 0.687-0.689).
    expansion_weight: float = 0.3
    community_bonus: float = 0.05  # pull toward the seeds' dominant community
    candidates: int = 100  # per retriever, before fusion
    # Weighted sum of min-max normalised scores beat RRF on SciFact (0.725 vs 0.716):
    # half lexical (keyword + graph), half dense.
    fusion: Literal["rrf", "weighted"] = "weighted"
    hybrid_weights: dict[str, float] = field(default_factory=lambda: {"keyword": 0.5, "graph": 0.5, "dense": 1.0})


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


class Retriever:
    def __init__(self, index: IndexData, embedder: Embedder | None = None, config: RetrievalConfig | None = None):
        self.index = index
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        self.vocabulary = set(index.bm25.vocab_dict)
        self.chunk_position = {chunk.id: i for i, chunk in enumerate(index.chunks)}
        self.chunk_community = np.asarray(index.chunk_community or [-1] * len(index.chunks), dtype=np.int64)
        graph = index.cooccurrence
        self.term_strength = {term: float(graph.degree(term, weight="weight")) for term in graph}

    @property
    def has_dense(self) -> bool:
        return self.embedder is not None and self.index.vectors is not None

    # ---- public -------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 5, mode: Mode = "hybrid", paths: list[str] | None = None) -> list[Hit]:
        if not self.index.chunks:
            return []
        mask = self.path_mask(paths)
        query_tokens = _QueryTokens(tokenize(query), surface_forms(query))
        if mode == "keyword":
            scores = self.keyword_scores(query_tokens, mask)
            return [self._hit(i, float(scores[i]), query_tokens, {"keyword": rank}) for rank, i in
                    enumerate(_top_positive(scores, top_k), start=1)]
        if mode == "graph":
            scores, expansion = self.graph_scores(query, query_tokens, mask)
            return [self._hit(i, float(scores[i]), query_tokens, {"graph": rank}, expansion) for rank, i in
                    enumerate(_top_positive(scores, top_k), start=1)]
        if mode == "hybrid":
            return self.hybrid(query, query_tokens, top_k, mask)
        raise ValueError(f"unknown mode {mode!r}")

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

    def dense_scores(self, query: str, mask: np.ndarray | None) -> np.ndarray | None:
        if not self.has_dense or not query.strip():
            return None
        query_vector = self.embedder.encode_queries([query])[0]
        scores = self.index.vectors @ query_vector
        return scores if mask is None else np.where(mask, scores, -1.0)

    def hybrid(self, query: str, query_tokens: list[str], top_k: int, mask: np.ndarray | None) -> list[Hit]:
        config, n = self.config, self.config.candidates
        keyword = self.keyword_scores(query_tokens, mask)
        graph, expansion = self.graph_scores(query, query_tokens, mask)
        dense = self.dense_scores(query, mask)
        candidates = {"keyword": _top_positive(keyword, n), "graph": _top_positive(graph, n)}
        signals = {"keyword": keyword, "graph": graph}
        if dense is not None:
            allowed = np.flatnonzero(mask) if mask is not None else None
            candidates["dense"] = _top_indices(dense, n, allowed)
            signals["dense"] = dense
        weights = {name: w for name, w in config.hybrid_weights.items() if name in candidates}
        if not any(weights.values()):
            weights = {name: 1.0 for name in candidates}
        if config.fusion == "rrf":
            fused = reciprocal_rank_fusion({k: v for k, v in candidates.items() if weights.get(k)}, weights)
        else:
            fused = weighted_score_fusion(
                {name: {i: float(signals[name][i]) for i in ranking} for name, ranking in candidates.items()
                 if weights.get(name)}, weights)
        ranks = {name: {item: r for r, item in enumerate(ranking, start=1)} for name, ranking in candidates.items()}
        return [self._hit(i, fused[i], query_tokens, {name: ranks[name].get(i) for name in candidates}, expansion)
                for i in top_items(fused, top_k)]

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
