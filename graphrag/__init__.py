"""GraphRAG: an offline index (chunks, terms, a term graph with communities, BM25 and
optional dense vectors) and a retrieval service with keyword, graph and hybrid modes.

No LLM is needed to build or query it: terms come from tokenization and co-occurrence,
in the spirit of FastGraphRAG/LazyGraphRAG.
"""
