"""The llm_server control API: health of vLLM and the LoRA adapter registry.

Chat traffic never passes through here: clients call vLLM directly (LLM_BASE_URL_LOCAL).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from common.adapters import AdapterNameError, is_family, latest_by_family, latest_version, parse_adapter_name
from common.app import create_service_app
from common.auth import require_service_token
from common.errors import OpenAIError
from common.logging import get_logger
from llm_server.adapters import discover_adapters, read_adapter
from llm_server.settings import LLMServerSettings
from llm_server.vllm_client import VllmClient

log = get_logger("llm_server.app")


class LoadAdapterRequest(BaseModel):
    name: str = Field(description="'<family>-v<N>', or a bare family for its newest version on disk")
    path: str | None = Field(None, description="adapter directory; default: <adapters dir>/<name>")


class UnloadAdapterRequest(BaseModel):
    name: str


def create_app(settings: LLMServerSettings, vllm: VllmClient | None = None) -> FastAPI:
    vllm = vllm or VllmClient(settings.vllm_url, settings.vllm_api_key)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await vllm.aclose()

    async def vllm_reachable() -> None:
        await vllm.models()

    app = create_service_app("llm_server", settings, readiness={"vllm": vllm_reachable}, lifespan=lifespan)
    app.state.vllm = vllm
    app.state.adapter_ops = app.state.metrics.counter(
        "llm_server_adapter_operations_total", "Adapter load/unload calls by outcome", ["operation", "outcome"])
    app.include_router(_adapter_router(settings))
    return app


def _adapter_router(settings: LLMServerSettings) -> APIRouter:
    # Every control route needs LLM_SERVER_API_TOKEN (only /healthz, /readyz and /metrics are open).
    router = APIRouter(prefix="/v1/adapters", dependencies=[Depends(require_service_token)])
    adapters_dir = settings.resolved_adapters_dir

    @router.get("")
    async def list_adapters(request: Request) -> dict:
        loaded = await _loaded_or_unavailable(request.app.state.vllm)
        on_disk = {a.name: a.as_dict() for a in discover_adapters(adapters_dir)}
        rows = []
        for name in sorted(set(on_disk) | set(loaded)):
            row = on_disk.get(name) or _describe_loaded_only(name, loaded[name])
            rows.append({**row, "loaded": name in loaded})
        return {"object": "list", "base_model": settings.served_model_name, "adapters_dir": str(adapters_dir),
                "data": rows, "latest_loaded": latest_by_family(set(loaded))}

    @router.post("/load")
    async def load_adapter(body: LoadAdapterRequest, request: Request) -> dict:
        name, path = _resolve_for_load(body, adapters_dir)
        ops = request.app.state.adapter_ops
        loaded = await _loaded_or_unavailable(request.app.state.vllm)
        if name in loaded:
            ops.labels("load", "already_loaded").inc()
            return {"name": name, "path": loaded[name] or str(path), "loaded": True, "changed": False}
        try:
            await request.app.state.vllm.load_adapter(name, str(path))
        except OpenAIError:
            ops.labels("load", "error").inc()
            raise
        ops.labels("load", "ok").inc()
        log.info("adapter loaded", extra={"adapter": name, "path": str(path)})
        return {"name": name, "path": str(path), "loaded": True, "changed": True}

    @router.post("/unload")
    async def unload_adapter(body: UnloadAdapterRequest, request: Request) -> dict:
        _check_name(body.name)
        ops = request.app.state.adapter_ops
        loaded = await _loaded_or_unavailable(request.app.state.vllm)
        if body.name not in loaded:
            ops.labels("unload", "not_loaded").inc()
            raise OpenAIError(404, f"adapter {body.name!r} is not loaded (loaded: {sorted(loaded) or 'none'})",
                              param="name", code="adapter_not_loaded")
        try:
            await request.app.state.vllm.unload_adapter(body.name)
        except OpenAIError:
            ops.labels("unload", "error").inc()
            raise
        ops.labels("unload", "ok").inc()
        log.info("adapter unloaded", extra={"adapter": body.name})
        return {"name": body.name, "loaded": False, "changed": True}

    return router


def _resolve_for_load(body: LoadAdapterRequest, adapters_dir: Path) -> tuple[str, Path]:
    name = body.name
    if body.path is None and is_family(name):
        newest = latest_version([a.name for a in discover_adapters(adapters_dir)], name)
        if newest is None:
            raise OpenAIError(404, f"no adapter of family {name!r} in {adapters_dir}", param="name",
                              code="adapter_not_found")
        name = newest
    _check_name(name)
    path = confined_adapter_path(body.path, name, adapters_dir)
    try:
        read_adapter(path) if body.path is None else _check_peft_dir(path)
    except ValueError as exc:
        raise OpenAIError(404, str(exc), param="path", code="adapter_not_found")
    return name, path


def confined_adapter_path(requested: str | None, name: str, adapters_dir: Path) -> Path:
    """The adapter directory to load, which must lie inside LLM_ADAPTERS_DIR once every `..` and
    symlink is resolved: the control API never loads weights from anywhere else on the host."""
    root = adapters_dir.resolve()
    candidate = Path(requested) if requested else root / name
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise OpenAIError(403, f"adapter path must be inside the adapters directory {root}", param="path",
                          code="adapter_path_forbidden")
    return resolved


def _check_peft_dir(path: Path) -> None:
    # An explicit path may be named anything (a training output dir); the name in the request is what counts.
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"{path} is not a PEFT adapter (no adapter_config.json)")


def _check_name(name: str) -> None:
    try:
        parse_adapter_name(name)
    except AdapterNameError as exc:
        raise OpenAIError(400, str(exc), param="name", code="invalid_adapter_name")


def _describe_loaded_only(name: str, path: str) -> dict:
    try:
        parsed = parse_adapter_name(name)
        family, version = parsed.family, parsed.version
    except AdapterNameError:  # loaded by someone talking to vLLM directly with a free-form name
        family, version = name, None
    return {"name": name, "family": family, "version": version, "path": path, "rank": None, "base_model": None}


async def _loaded_or_unavailable(vllm: VllmClient) -> dict[str, str]:
    try:
        return await vllm.loaded_adapters()
    except Exception as exc:
        raise OpenAIError(503, f"vLLM is not reachable: {type(exc).__name__}: {exc}", code="vllm_unavailable")
