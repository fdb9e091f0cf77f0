"""The retrieval service (port 8002): POST /v1/retrieve, GET /v1/index."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from common.app import create_service_app
from common.auth import require_service_token
from common.errors import OpenAIError
from graphrag.language import language_shares
from graphrag.rerank import load_reranker_or_none
from graphrag.retriever import RetrievalConfig
from graphrag.service import IndexHolder
from graphrag.settings import MAX_TOP_K, GraphRAGSettings

# Every route but /healthz, /readyz and /metrics needs graphrag's own token (GRAPHRAG_API_TOKEN).
router = APIRouter(prefix="/v1", dependencies=[Depends(require_service_token)])


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=4000)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    mode: Literal["keyword", "graph", "hybrid"] = "hybrid"
    paths: list[str] | None = Field(default=None, max_length=50,
                                    description="keep chunks whose path starts with, or matches the glob of, any entry")
    rerank: bool | None = Field(default=None, description="rescore the top hybrid candidates with the deployment's "
                                "cross-encoder (RERANKER_PROVIDER); default RERANK_DEFAULT; ignored in keyword and "
                                "graph modes and when no reranker is configured (then `legs` lacks \"rerank\")")


def holder(request: Request) -> IndexHolder:
    return request.app.state.index


@router.post("/retrieve")
async def retrieve(body: RetrieveRequest, request: Request) -> dict:
    settings: GraphRAGSettings = request.app.state.settings
    if not settings.graph_rag_enabled:
        raise OpenAIError(503, "Retrieval is disabled (GRAPH_RAG_ENABLED=false).", code="retrieval_disabled")
    if not body.query.strip():
        raise OpenAIError(400, "query must not be empty.", param="query", code="empty_query")
    live = holder(request).live
    if live is None:
        raise OpenAIError(503, f"No index is loaded: {holder(request).last_error}.", code="index_unavailable")
    retriever = live.retriever  # this request keeps this version even if a reload swaps it
    rerank = settings.rerank_default if body.rerank is None else body.rerank
    started = time.perf_counter()
    hits, legs = await asyncio.to_thread(retriever.search_with_legs, body.query, body.top_k, body.mode, body.paths,
                                         rerank and body.mode == "hybrid")
    request.app.state.retrieval_seconds.labels(body.mode).observe(time.perf_counter() - started)
    data = []
    for rank, hit in enumerate(hits, start=1):
        chunk = retriever.index.chunks[hit.chunk_index]
        data.append({"rank": rank, "id": chunk.id, "text": chunk.text, "score": round(float(hit.score), 6),
                     "citation": chunk.citation(), "why": hit.why})
    return {"object": "list", "query": body.query, "mode": body.mode, "index_version": live.version,
            "dense": retriever.has_dense, "legs": legs, "language": language_shares(body.query),
            "data": data, "communities": _communities_of(retriever, hits)}


def _communities_of(retriever, hits) -> list[dict]:
    """The topic communities the hits belong to, with their extractive summaries: context
    about the neighbourhood of the answer, not only the answer's chunks."""
    index = retriever.index
    ids = dict.fromkeys(hit.why["community"] for hit in hits if "community" in hit.why)
    return [{"id": cid, "terms": [index.term_labels.get(t, t) for t in index.communities[cid].terms[:8]],
             "summary": index.communities[cid].summary} for cid in ids if 0 <= cid < len(index.communities)]


@router.get("/index")
async def index_info(request: Request) -> dict:
    live = holder(request).live
    if live is None:
        raise OpenAIError(503, f"No index is loaded: {holder(request).last_error}.", code="index_unavailable")
    manifest = live.retriever.index.manifest
    return {"version": live.version, "created_at": manifest["created_at"], "stats": manifest["stats"],
            "embedding": manifest["embedding"], "skipped": manifest["skipped"],
            "communities": [{"id": c.id, "terms": c.terms[:10], "summary": c.summary, "chunks": len(c.chunk_ids)}
                            for c in live.retriever.index.communities[:50]]}


def create_app(settings: GraphRAGSettings | None = None):
    settings = settings or GraphRAGSettings()
    index = IndexHolder(settings.graph_rag_index_path, RetrievalConfig.from_file(settings.graphrag_weights_path),
                        reranker=load_reranker_or_none(settings.reranker_provider))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        watcher = None
        if settings.graph_rag_enabled:
            await index.refresh()
            watcher = asyncio.create_task(index.watch(settings.graph_rag_reload_interval_sec))
        yield
        if watcher:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def index_loaded() -> None:
        if not settings.graph_rag_enabled:
            return
        if index.live is None:
            raise RuntimeError(index.last_error or "index not loaded")

    async def retrieval_enabled() -> None:
        if not settings.graph_rag_enabled:
            raise RuntimeError("GRAPH_RAG_ENABLED=false")

    app = create_service_app("graphrag", settings, readiness={"index": index_loaded},
                             optional_readiness={"retrieval_enabled": retrieval_enabled}, lifespan=lifespan)
    app.state.index = index
    app.state.retrieval_seconds = app.state.metrics.histogram(
        "graphrag_retrieval_seconds", "Time spent ranking chunks, by mode", ["mode"])
    app.include_router(router)
    return app
