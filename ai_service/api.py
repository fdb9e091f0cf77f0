"""HTTP routes of ai_service. Thin: parse, call the engine, shape the response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ai_service.auth import Caller, gateway_caller
from ai_service.chat import ChatEngine
from ai_service.modes import UnknownModeError, resolve_mode
from ai_service.upstreams import Served
from common.errors import OpenAIError
from common.protocol import ChatCompletionRequest, ChatMessage, StreamOptions

router = APIRouter(prefix="/v1")


class ModeChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str = Field(min_length=1, max_length=64)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    top_k: int = Field(default=5, ge=1, le=20, description="passages to retrieve in _rag modes")


async def engine(request: Request) -> ChatEngine:
    return request.app.state.engine


def _respond(served: Served, headers: dict[str, str], extra: dict[str, Any] | None = None):
    if served.chunks is not None:
        return StreamingResponse(served.chunks, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    body = served.body if served.status >= 400 or not extra else {**served.body, **extra}
    return JSONResponse(body, status_code=served.status, headers=headers)


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest,
    caller: Caller = Depends(gateway_caller),
    chat: ChatEngine = Depends(engine),
    x_data_classification: str | None = Header(default=None),
):
    classification = chat.classification(caller.key_classification, x_data_classification, body)
    model = await chat.resolve_model(body.model)
    served = await chat.complete(body, model, classification)
    return _respond(served, chat.response_headers(served, classification))


@router.get("/models")
async def list_models(caller: Caller = Depends(gateway_caller), chat: ChatEngine = Depends(engine)):
    try:
        models = await chat.local_models(fresh=True)
    except Exception as exc:
        raise OpenAIError(503, f"The local model server is not reachable: {type(exc).__name__}.",
                          code="upstream_unavailable") from exc
    return {"object": "list", "data": models}


@router.post("/chat")
async def chat_with_mode(
    body: ModeChatRequest,
    request: Request,
    caller: Caller = Depends(gateway_caller),
    chat: ChatEngine = Depends(engine),
    x_data_classification: str | None = Header(default=None),
):
    try:
        mode, rag = resolve_mode(body.mode, request.app.state.modes)
    except UnknownModeError as exc:
        raise OpenAIError(400, str(exc), param="mode", code="unknown_mode") from exc
    adapter = await chat.adapter_for_mode(mode)
    model = adapter or chat.settings.llm_model_local
    messages = [ChatMessage(role="system", content=mode.system_prompt), *body.messages]
    completion = ChatCompletionRequest(
        model=model,
        messages=messages,
        **body.model_dump(exclude={"mode", "messages", "top_k"}, exclude_none=True),
    )
    classification = chat.classification(caller.key_classification, x_data_classification, completion)
    served = await chat.complete(completion, model, classification)
    extra = {"mode": body.mode, "adapter": adapter if served.model == adapter else None, "upstream": served.tier.value}
    headers = chat.response_headers(served, classification)
    headers["x-tutorstack-mode"] = body.mode
    return _respond(served, headers, extra)
