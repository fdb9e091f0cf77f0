"""GET /v1/replicas: the local vLLM replicas as ai_service's balancer sees them (admin view)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ai_service.auth import Caller, gateway_caller
from common.errors import OpenAIError

router = APIRouter(prefix="/v1")


class ReplicaState(BaseModel):
    url: str = Field(description="the replica's OpenAI base URL")
    control_url: str = Field(description="its llm_server control API ('' = adapters are not loaded on demand)")
    up: bool = Field(description="its last health probe (vLLM /health) answered")
    breaker: str = Field(description="circuit breaker: closed | open | half_open")
    consecutive_failures: int
    adapters: list[str] = Field(description="LoRA adapters loaded on it (from its /v1/models)")
    in_flight: int = Field(description="requests this ai_service has on it now")
    running: float = Field(description="vLLM's running requests at the last scrape (all clients)")
    waiting: float = Field(description="vLLM's waiting requests at the last scrape")
    kv_cache_usage: float = Field(description="vLLM's KV-cache use, 0..1, at the last scrape")
    score: float = Field(description="the balancer's load estimate; lower is picked first")
    served: int
    failed: int
    last_error: str


class ReplicasView(BaseModel):
    discovery_url: str = Field(description="the dns+ discovery URL's target, '' for a fixed list")
    poll_sec: float
    adapter_affinity: bool
    sticky_sessions: bool
    load_adapters_on_demand: bool
    replicas: list[ReplicaState]


@router.get("/replicas", response_model=ReplicasView)
async def list_replicas(request: Request, caller: Caller = Depends(gateway_caller)) -> dict:
    if caller.role != "admin" and request.app.state.settings.app_env != "dev":
        raise OpenAIError(403, "Only an admin may see the replicas.", code="forbidden")
    pool = request.app.state.engine.router.pool
    if pool is None:
        raise OpenAIError(404, "A single local upstream is configured (LLM_BASE_URL_LOCAL names one replica).",
                          code="no_replicas")
    await pool.ensure_started()
    return pool.snapshot()


async def replicas_ready(app) -> None:
    """Optional /readyz check: every known replica is up (one down leaves ai_service ready, degraded)."""
    pool = app.state.engine.router.pool
    await pool.ensure_started()
    down = [r.name for r in pool.replicas.values() if not r.up]
    if down or not pool.replicas:
        raise RuntimeError(f"{len(pool.replicas) - len(down)}/{len(pool.replicas)} replicas up; down: {', '.join(down) or '-'}")
