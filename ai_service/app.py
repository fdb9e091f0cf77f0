"""ai_service app factory."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ai_service.api import install_fast_routes, router
from ai_service.chat import ChatEngine
from ai_service.delegate import ServiceDirectory
from ai_service.moderation import Moderation
from ai_service.moderation import router as safety_router
from ai_service.modes import load_modes
from ai_service.routing import Policy
from ai_service.replicas_api import replicas_ready
from ai_service.replicas_api import router as replicas_router
from ai_service.service_routes import router as service_router
from ai_service.settings import AIServiceSettings
from ai_service.tools_api import router as tools_router
from ai_service.upstreams import build_upstreams
from common.app import create_service_app


def create_app(settings: AIServiceSettings | None = None) -> FastAPI:
    settings = settings or AIServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.safety_enabled:  # safety: load the moderation models once, off the event loop
            app.state.moderation_loading = asyncio.create_task(asyncio.to_thread(app.state.moderation.load))
        yield
        await app.state.engine.aclose()
        await app.state.services.aclose()

    app = create_service_app("ai_service", settings, lifespan=lifespan)
    app.state.modes = load_modes(settings.chat_modes_file)
    retrievals = app.state.metrics.counter(
        "tutorstack_retrievals_total", "Retrievals for RAG chats by mode and outcome", ["mode", "status"])
    mode_requests = app.state.metrics.counter(
        "tutorstack_mode_requests_total", "Chats by mode, the adapter that served them and their A/B arm",
        ["mode", "adapter", "ab_variant"])
    app.state.engine = ChatEngine(settings, build_upstreams(settings, app.state.metrics), retrievals, mode_requests)
    engine = app.state.engine
    # The tier the policy depends on must be up; the other one is reported, not required.
    if settings.llm_routing_policy is Policy.CLOUD_ONLY:
        app.state.readiness.required["cloud_llm"] = engine.check_cloud
    else:
        app.state.readiness.required["local_llm"] = engine.check_local
        if settings.cloud_configured:
            app.state.readiness.optional["cloud_llm"] = engine.check_cloud
    # Retrieval is optional: RAG chats answer without passages when it is off or down, and say so.
    app.state.readiness.optional["graphrag"] = engine.check_graphrag
    if engine.router.pool is not None:  # several local replicas: one down is degraded, not unready
        app.state.readiness.optional["llm_replicas"] = lambda: replicas_ready(app)
    app.state.services = ServiceDirectory(settings)
    # safety (docs/safety.md): moderation on every chat route; personal data never reaches the cloud tier
    app.state.moderation = Moderation(settings, app.state.metrics, engine._redis, app.state.modes)
    engine.moderation = app.state.moderation
    engine.router.cloud_body_filter = app.state.moderation.redact_for_cloud
    if settings.safety_enabled:
        app.state.readiness.required["moderation"] = app.state.moderation.check_ready
    app.include_router(router)
    app.include_router(service_router)
    app.include_router(tools_router)
    app.include_router(safety_router)
    app.include_router(replicas_router)
    install_fast_routes(app)  # POST /v1/chat/completions without FastAPI's per-request cost
    return app
