"""Chat orchestration: classification, route plan, model/adapter resolution. No FastAPI here."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client import Counter

from ai_service.modes import ChatMode
from ai_service.rag import Passage, RetrievalMode, RetrievalUnavailable, last_user_text, retrieval_query, retrieve
from ai_service.routing import RoutingConfig, Tier, effective_classification, plan_route
from ai_service.settings import AIServiceSettings
from ai_service.upstreams import Served, UpstreamRouter
from common.ab import ab_key, assign_variant
from common.adapters import latest_by_family, latest_version
from common.auth import SERVICE_TOKEN_HEADER
from common.errors import OpenAIError
from common.http import request_id_headers
from common.logging import get_logger
from common.protocol import ChatCompletionRequest

MODEL_LIST_TTL_SEC = 5.0
AB_CACHE_SEC = 1.0
log = get_logger("ai_service.chat")


class ChatEngine:
    def __init__(self, settings: AIServiceSettings, router: UpstreamRouter, retrievals: Counter,
                 mode_requests: Counter):
        self.settings = settings
        self.router = router
        self.retrievals = retrievals  # {mode, status}
        self.mode_requests = mode_requests  # {mode, adapter, ab_variant}
        self._graphrag = httpx.AsyncClient(base_url=settings.graph_rag_url,
                                           timeout=httpx.Timeout(settings.graph_rag_timeout_sec, connect=2.0),
                                           headers={SERVICE_TOKEN_HEADER: settings.graphrag_api_token}
                                           if settings.graphrag_api_token else None)
        self.routing = RoutingConfig(
            policy=settings.llm_routing_policy,
            app_env=settings.app_env,
            cloud_fallback_nonprod=settings.llm_enable_cloud_fallback_nonprod,
            cloud_configured=settings.cloud_configured,
        )
        self._models: list[dict] = []
        self._models_fetched_at = 0.0
        self._models_fetch: asyncio.Future | None = None  # the one refresh in flight, shared by all callers
        self._redis = aioredis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._ab_cache: dict[str, tuple[float, dict | None]] = {}

    # --- models -------------------------------------------------------------------
    async def local_models(self, *, fresh: bool = False) -> list[dict]:
        """The local vLLM's model list (base model and loaded LoRA adapters), briefly cached."""
        if self.router.pool is not None:  # several replicas: every model any of them serves
            return await self.router.pool.models(fresh=fresh)
        if fresh or time.monotonic() - self._models_fetched_at > MODEL_LIST_TTL_SEC:
            # One GET /models when the cache expires, however many requests arrive meanwhile: they all wait
            # for that one (otherwise, under load, every request in flight at expiry sends its own).
            if self._models_fetch is None or self._models_fetch.done():
                self._models_fetch = asyncio.ensure_future(self._fetch_models())
                self._models_fetch.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen by callers
            await asyncio.shield(self._models_fetch)
        return self._models

    async def _fetch_models(self) -> None:
        self._models = await self.router.upstreams[Tier.LOCAL].models()
        self._models_fetched_at = time.monotonic()

    async def local_model_ids(self) -> list[str]:
        try:
            return [m["id"] for m in await self.local_models()]
        except Exception:
            return []  # local down: routing will find out and fall back or fail properly

    async def unknown_model_message(self, requested: str) -> str:
        ids = await self.local_model_ids()
        families = sorted(latest_by_family(ids))
        named = ", ".join(ids) + (f"; or an adapter family for its newest version: {', '.join(families)}"
                                  if families else "")
        return f"The model `{requested}` does not exist here. Valid models: {named}."

    async def resolve_model(self, requested: str) -> str:
        """'' means the base model; an adapter family name ('peer') means its newest version."""
        if not requested:
            return self.settings.llm_model_local
        ids = await self.local_model_ids()
        if requested in ids:
            return requested
        return latest_version(ids, requested) or requested

    async def adapter_for_mode(self, mode: ChatMode, subject: str = "") -> tuple[str | None, str | None]:
        """The adapter that serves `mode` for this caller, and its A/B arm (None without a split).

        Without a split: the family's newest loaded version. With one (docs/feedback.md), the
        caller's sticky arm; an arm whose adapter is not loaded gives way to the other arm."""
        if not mode.adapter:
            return None, None
        loaded = await self.local_model_ids()
        split = await self.ab_split(mode.name)
        if split:
            variant = assign_variant(mode.name, subject, float(split.get("percent", 0)))
            order = [variant, "control" if variant == "candidate" else "candidate"]
            for arm in order:
                name = split.get(arm)
                if name == "":
                    return None, arm  # this arm is the base model
                if name in loaded:
                    return name, arm
        return latest_version(loaded, mode.adapter), None

    async def ab_split(self, mode_name: str) -> dict | None:
        """The mode's A/B split from Redis, cached for a second (one Redis read per second, not per
        request; a change applies within a second). Redis down: no split, the chat still answers."""
        now = time.monotonic()
        cached = self._ab_cache.get(mode_name)
        if cached and now - cached[0] < AB_CACHE_SEC:
            return cached[1]
        split = None
        try:
            raw = await self._redis.get(ab_key(mode_name, self.settings.ab_key_prefix))
            split = json.loads(raw) if raw else None
        except Exception as exc:  # the split is an experiment; losing it for a moment must not fail chats
            log.warning("A/B split unreadable", extra={"mode": mode_name, "error": repr(exc)[:200]})
        self._ab_cache[mode_name] = (now, split if isinstance(split, dict) else None)
        return self._ab_cache[mode_name][1]

    # --- classification and routing ---------------------------------------------------
    @staticmethod
    def classification(key_default: str, header_value: str | None, request: ChatCompletionRequest) -> str:
        metadata_value = (request.metadata or {}).get("data_classification")
        try:
            return effective_classification(key_default, header_value, metadata_value)
        except ValueError as exc:
            raise OpenAIError(400, str(exc), param="metadata.data_classification", code="invalid_classification")

    # safety: set by the app (ai_service/moderation.py); complete() with a moderation context checks in and out
    moderation: Any = None

    async def complete(self, request: ChatCompletionRequest, model: str, classification: str,
                       moderation: Any = None) -> Served:
        plan = plan_route(self.routing, classification)
        if moderation is not None and self.moderation is not None:  # safety: docs/safety.md
            return await self.moderation.complete(self.router, request, model, plan, moderation)
        body = request.upstream_body(model)
        if request.stream:
            return await self.router.stream(plan, body, model)
        return await self.router.complete(plan, body, model)

    # --- retrieval ---------------------------------------------------------------------
    async def retrieve_passages(self, messages: list, top_k: int, mode: RetrievalMode,
                                paths: list[str] | None = None) -> tuple[list[Passage], dict[str, Any]]:
        """Passages for the last user message, and what happened, for the response's `retrieval`
        field. Retrieval failing never fails the chat: it answers without passages and says so."""
        info: dict[str, Any] = {"mode": mode, "top_k": top_k}
        if not self.settings.graph_rag_enabled:
            status, passages = "disabled", []
            info["detail"] = "retrieval is turned off (GRAPH_RAG_ENABLED=false); answered without course passages"
        else:
            try:
                query = retrieval_query(last_user_text(messages))
                passages = await retrieve(self._graphrag, self.settings.graph_rag_url, query,
                                          top_k, mode, paths, headers=request_id_headers())
                status = "ok"
            except RetrievalUnavailable as exc:  # or RetrievalRejected: status says which
                status, passages = exc.status, []
                info["detail"] = f"{exc}; answered without course passages"
                log.warning(f"retrieval {exc.status}", extra={"detail": str(exc)})
        self.retrievals.labels(mode, status).inc()
        return passages, {"status": status, "passages": len(passages), **info}

    async def check_graphrag(self) -> None:
        if not self.settings.graph_rag_enabled:
            raise RuntimeError("disabled (GRAPH_RAG_ENABLED=false)")
        response = await self._graphrag.get("/readyz", timeout=2.0)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._graphrag.aclose()
        await self.router.aclose()

    async def check_local(self) -> None:
        await self.local_models(fresh=True)

    async def check_cloud(self) -> None:
        await self.router.upstreams[Tier.CLOUD].models()

    def response_headers(self, served: Served, classification: str) -> dict[str, str]:
        return {
            "x-tutorstack-upstream": served.tier.value,
            "x-tutorstack-model": header_safe(served.model),
            "x-tutorstack-data-classification": classification,
            **({"x-tutorstack-replica": served.replica} if served.replica else {}),
        }


def header_safe(value: str) -> str:
    """A header value from client-chosen text: HTTP headers carry latin-1 only, so anything else is
    percent-encoded (a model name in Chinese must not turn a good answer into a 500)."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~")
