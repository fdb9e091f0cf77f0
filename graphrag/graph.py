"""The term graph: terms that are key terms of the same chunk are linked (co-occurrence),
chunks are linked to their key terms (chunk-term graph), and Louvain communities group
terms into topics, each with an extractive summary."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from graphrag.corpus import Chunk
from graphrag.text import tokenize

LOUVAIN_SEED = 7  # fixed, so a rebuild and an incremental update give the same communities
SUMMARY_SENTENCES = 3


@dataclass
class Community:
    id: int
    terms: list[str]  # most central first
    summary: str
    chunk_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "terms": self.terms, "summary": self.summary, "chunk_ids": self.chunk_ids}


def cooccurrence_graph(key_terms: list[list[str]]) -> nx.Graph:
    weights: Counter = Counter()
    for terms in key_terms:
        for left, right in itertools.combinations(sorted(set(terms)), 2):
            weights[(left, right)] += 1
    graph = nx.Graph()
    graph.add_nodes_from(sorted({t for terms in key_terms for t in terms}))
    graph.add_weighted_edges_from((left, right, w) for (left, right), w in sorted(weights.items()))
    return graph


def chunk_term_graph(chunk_ids: list[str], key_terms: list[list[str]]) -> nx.Graph:
    """Bipartite: ("chunk", id) -- ("term", t). Graph retrieval walks term -> chunks on it."""
    graph = nx.Graph()
    for chunk_id, terms in zip(chunk_ids, key_terms):
        graph.add_node(("chunk", chunk_id), kind="chunk")
        for rank, term in enumerate(terms):
            graph.add_edge(("chunk", chunk_id), ("term", term), rank=rank)
    return graph


def detect_communities(graph: nx.Graph) -> list[list[str]]:
    """Louvain on the co-occurrence graph; isolated terms are left out (they form no topic)."""
    connected = graph.subgraph([n for n in graph if graph.degree(n) > 0])
    if connected.number_of_nodes() == 0:
        return []
    groups = nx.community.louvain_communities(connected, weight="weight", seed=LOUVAIN_SEED)
    ranked = []
    for group in groups:
        strength = {term: connected.degree(term, weight="weight") for term in group}
        ranked.append(sorted(group, key=lambda t: (-strength[t], t)))
    ranked.sort(key=lambda terms: (-len(terms), terms[0]))
    return ranked


def assign_chunks(chunks: list[Chunk], key_terms: list[list[str]], communities: list[list[str]]) -> list[int]:
    """Each chunk joins the community holding most of its key terms (-1: none)."""
    community_of = {term: index for index, terms in enumerate(communities) for term in terms}
    assignment = []
    for terms in key_terms:
        votes = Counter(community_of[t] for t in terms if t in community_of)
        assignment.append(min(votes, key=lambda c: (-votes[c], c)) if votes else -1)
    return assignment


_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]?")


def summarize(community_terms: list[str], member_chunks: list[Chunk], labels: dict[str, str]) -> str:
    """Extractive: the sentences that mention most of the community's terms, plus its top terms."""
    term_set = set(community_terms)
    scored = []
    for chunk in member_chunks:
        for sentence in _SENTENCE.findall(chunk.text):
            sentence = sentence.strip()
            if len(sentence) < 20:
                continue
            hits = len(term_set.intersection(tokenize(sentence)))
            if hits:
                scored.append((-hits, len(sentence), sentence))
    scored.sort()
    seen, picked = set(), []
    for _, _, sentence in scored:
        if sentence not in seen:
            seen.add(sentence)
            picked.append(sentence)
        if len(picked) == SUMMARY_SENTENCES:
            break
    topic = ", ".join(labels.get(t, t) for t in community_terms[:6])
    return f"Topic: {topic}. " + " ".join(picked)


def build_communities(chunks: list[Chunk], key_terms: list[list[str]], graph: nx.Graph,
                      labels: dict[str, str]) -> tuple[list[Community], list[int]]:
    groups = detect_communities(graph)
    assignment = assign_chunks(chunks, key_terms, groups)
    members: dict[int, list[Chunk]] = {}
    for chunk, community_id in zip(chunks, assignment):
        if community_id >= 0:
            members.setdefault(community_id, []).append(chunk)
    communities = [
        Community(index, terms, summarize(terms, members.get(index, [])[:50], labels),
                  [c.id for c in members.get(index, [])])
        for index, terms in enumerate(groups)
    ]
    return communities, assignment
