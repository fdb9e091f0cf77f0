"""Key terms per chunk: stemmed words and adjacent-word phrases ranked by TF-IDF over the corpus.

Selection depends on corpus-wide document frequencies, so it runs over all chunks at once
(never per file); that is what makes an incremental update equal a full rebuild.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from graphrag.corpus import Chunk
from graphrag.text import phrase_runs, stem

KEY_TERMS_PER_CHUNK = 8


def chunk_candidates(chunk: Chunk) -> Counter:
    """Unigram tokens plus two-word phrases ("thesis statement" -> "thesi statement")."""
    counts = Counter(chunk.tokens)
    for run in phrase_runs(chunk.index_text):
        for left, right in zip(run, run[1:]):
            counts[f"{left} {right}"] += 1
    return counts


def select_key_terms(chunks: list[Chunk],
                     per_chunk: int = KEY_TERMS_PER_CHUNK) -> tuple[list[list[str]], dict[str, float]]:
    """Returns each chunk's key terms (best first) and the idf of every selected term."""
    candidates = [chunk_candidates(chunk) for chunk in chunks]
    document_frequency = Counter(term for counts in candidates for term in counts)
    total = max(1, len(chunks))
    # A term in more than half the chunks links everything to everything: useless for expansion.
    too_common = total * 0.5 if total >= 10 else total + 1
    idf = {term: math.log(1 + total / df) for term, df in document_frequency.items()}
    key_terms: list[list[str]] = []
    for counts in candidates:
        scored = [
            (count * idf[term] * (1.5 if " " in term else 1.0), term)  # phrases are more specific
            for term, count in counts.items()
            if document_frequency[term] <= too_common and _is_meaningful(term)
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        key_terms.append([term for _, term in scored[:per_chunk]])
    selected = {term for terms in key_terms for term in terms}
    return key_terms, {term: idf[term] for term in sorted(selected)}


def _is_meaningful(term: str) -> bool:
    return not term.replace(" ", "").isdigit() and len(term) > 1


def surface_labels(chunks: list[Chunk], terms: set[str]) -> dict[str, str]:
    """The most frequent written form of each stemmed term, for showing in `why`."""
    forms: dict[str, Counter] = {}
    parts = {part for term in terms for part in term.split(" ")}  # phrases are labelled word by word
    for chunk in chunks:
        for word in re.findall(r"[A-Za-z][A-Za-z0-9]+", chunk.index_text):
            lower = word.lower()
            stemmed = stem(lower)
            if stemmed in parts and stemmed != lower:
                forms.setdefault(stemmed, Counter())[lower] += 1
    labels = {}
    for term in terms:
        words = [forms[p].most_common(1)[0][0] if p in forms else p for p in term.split(" ")]
        labels[term] = " ".join(words)
    return labels
