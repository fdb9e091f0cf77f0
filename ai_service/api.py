"""HTTP routes of ai_service. Thin: parse, call the engine, shape the response."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from ai_service.auth import Caller, gateway_caller
from ai_service.chat import ChatEngine
from ai_service.modes import ChatMode, UnknownModeError, resolve_mode
from ai_service.rag import RERANK, RetrievalMode, build_rag_messages, cite_completion, stream_with_citations
from ai_service.routing import Tier
from ai_service.schemas import (ChatCompletion, ChatCompletionChunk, ModeChatCompletion, ModeChatCompletionChunk,
                                ModelList, chat_responses)
from ai_service.transport import RelayResponse, dumps, loads
from ai_service.upstreams import Served
from common.errors import OpenAIError
from common.middleware import LabelledRoute
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
    top_k: int = Field(default=4, ge=1, le=20, description="passages to retrieve in _rag modes")
    paths: list[str] | None = Field(default=None, description="retrieve only from these source paths (globs)")
    rerank: bool | None = Field(default=None, description="hybrid retrieval: rescore the top candidates with "
                                "graphrag's cross-encoder (default: graphrag's RERANK_DEFAULT)")


class HybridChatRequest(ModeChatRequest):
    mode: str = Field(default="tutor", min_length=1, max_length=64)


async def engine(request: Request) -> ChatEngine:
    return request.app.state.engine


class FastJSONResponse(JSONResponse):
    """JSONResponse rendered by orjson: the completion bodies are the hot path."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _respond(served: Served, headers: dict[str, str], extra: dict[str, Any] | None = None):
    if served.chunks is not None:
        return RelayResponse(served.chunks, media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache"})
    body = served.body if served.status >= 400 or not extra else {**served.body, **extra}
    return FastJSONResponse(body, status_code=served.status, headers=headers)


@router.post("/chat/completions", openapi_extra={"parameters": [
    {"name": "x-data-classification", "in": "header", "required": False, "schema": {"type": "string"}}]},
             response_model=None, responses=chat_responses(  # documentation only: no run-time validation
                 ChatCompletion, ChatCompletionChunk,
                 "The upstream's chat.completion (stream=false), or its SSE stream"))
async def chat_completions(body: ChatCompletionRequest, request: Request, caller: Caller = Depends(gateway_caller)):
    # Documents the route (OpenAPI) and answers what ChatCompletionsEndpoint, the fast lane in front of it,
    # hands over: bodies it does not take itself (errors included), so FastAPI words every refusal.
    served, headers = await _chat_completion(body, request, caller)
    return _respond(served, headers)


async def _chat_completion(body: ChatCompletionRequest, request: Request, caller: Caller) -> tuple[Served, dict]:
    chat: ChatEngine = request.app.state.engine
    x_data_classification = request.headers.get("x-data-classification")
    classification = chat.classification(caller.key_classification, x_data_classification, body)
    model = await chat.resolve_model(body.model)
    if body.max_tokens is None and body.max_completion_tokens is None and chat.settings.llm_default_max_tokens:
        body.max_tokens = chat.settings.llm_default_max_tokens  # bound a rambling model's answer
    moderation = chat.moderation and chat.moderation.context(request, "completions", caller, body.metadata)  # safety
    served = await chat.complete(body, model, classification, moderation)
    if served.status == 404 and served.tier == Tier.LOCAL and served.body \
            and served.body.get("error", {}).get("code") == "model_not_found":
        # vLLM lists only its base model as valid; adapters and their families are valid names too
        served.body["error"]["message"] = await chat.unknown_model_message(body.model)
    return served, chat.response_headers(served, classification)


_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_HANDED_OVER = "tutorstack.fastapi_lane"  # scope key: the fast lane gave this request to the FastAPI route


class ChatCompletionsRoute(LabelledRoute):
    """The fast lane's route, ahead of FastAPI's for the same path; it steps aside for a request it handed over."""

    def matches(self, scope: Scope):
        if scope.get(_HANDED_OVER):
            return Match.NONE, {}
        return super().matches(scope)


class ChatCompletionsEndpoint:
    """POST /v1/chat/completions as a plain ASGI endpoint: the hottest route, served without FastAPI's
    per-request dependency solving, Request/Response objects and route matching (about a fifth of the
    route's CPU; bench/results/gateway_overhead*). It does exactly what `chat_completions` does, for a
    JSON object body that validates; any other body (not JSON, not an object, invalid fields) is handed,
    as read, to the FastAPI route above, so errors keep FastAPI's exact wording and order. The token check
    (gateway_caller), moderation and routing are the same calls."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        request = Request(scope, receive)
        body = None
        if raw and request.headers.get("content-type", "").encode("latin-1").lower() in _JSON_TYPES:
            try:
                data = loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict):
                caller = await gateway_caller(request)  # FastAPI too checks the token before the fields
                try:
                    body = ChatCompletionRequest.model_validate(data)
                except ValidationError:
                    body = None
        if body is None:
            await _hand_over(scope, raw, receive, send)
            return
        served, headers = await _chat_completion(body, request, caller)
        if served.chunks is not None:
            await RelayResponse(served.chunks, media_type="text/event-stream",
                                headers={**headers, "cache-control": "no-cache"})(scope, receive, send)
            return
        content = dumps(served.body)
        raw_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        raw_headers.append((b"content-length", str(len(content)).encode()))
        raw_headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": served.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OpenAIError(400, "The client went away.", code="client_disconnected")
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _hand_over(scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
    """The request, its body replayed, to the app's router again, where the FastAPI route answers it."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    scope[_HANDED_OVER] = True
    await scope["app"].router(scope, replay, send)


def install_fast_routes(app) -> None:
    """Puts the fast lane in front of the routes (call after include_router)."""
    app.router.routes.insert(0, ChatCompletionsRoute("/v1/chat/completions", ChatCompletionsEndpoint(),
                                                     methods=["POST"], include_in_schema=False))


@router.get("/models", response_model=None, responses={200: {"model": ModelList, "description": (
    "The local model server's models: the base model and the loaded LoRA adapters")}})
async def list_models(caller: Caller = Depends(gateway_caller), chat: ChatEngine = Depends(engine)):
    try:
        models = await chat.local_models(fresh=True)
    except Exception as exc:
        raise OpenAIError(503, f"The local model server is not reachable: {type(exc).__name__}.",
                          code="upstream_unavailable") from exc
    return {"object": "list", "data": models}


@router.post("/chat", response_model=None, responses=chat_responses(
    ModeChatCompletion, ModeChatCompletionChunk,
    "A chat.completion with the mode's fields (stream=false), or its SSE stream"))
async def chat_with_mode(
    body: ModeChatRequest,
    request: Request,
    caller: Caller = Depends(gateway_caller),
    chat: ChatEngine = Depends(engine),
    x_data_classification: str | None = Header(default=None),
):
    """A chat mode (system prompt + optional adapter); `<mode>_rag` retrieves with the graph first."""
    mode, rag = _mode(body.mode, request)
    return await _mode_chat(body, mode, "graph" if rag else None, caller, chat, x_data_classification, request)


@router.post("/chat/hybrid", response_model=None, responses=chat_responses(
    ModeChatCompletion, ModeChatCompletionChunk,
    "A chat.completion with citations and retrieval (stream=false), or its SSE stream"))
async def chat_hybrid(
    body: HybridChatRequest,
    request: Request,
    caller: Caller = Depends(gateway_caller),
    chat: ChatEngine = Depends(engine),
    x_data_classification: str | None = Header(default=None),
):
    """A chat mode (default tutor) grounded in passages from hybrid retrieval (BM25 + graph + dense)."""
    mode, _ = _mode(body.mode, request)
    return await _mode_chat(body, mode, "hybrid", caller, chat, x_data_classification, request)


def _mode(name: str, request: Request) -> tuple[ChatMode, bool]:
    try:
        return resolve_mode(name, request.app.state.modes)
    except UnknownModeError as exc:
        raise OpenAIError(400, str(exc), param="mode", code="unknown_mode") from exc


async def _mode_chat(body: ModeChatRequest, mode: ChatMode, retrieval_mode: RetrievalMode | None, caller: Caller,
                     chat: ChatEngine, x_data_classification: str | None, request: Request | None = None):
    moderation = chat.moderation and chat.moderation.context(request, mode.name, caller, body.metadata)  # safety
    adapter, ab_variant = await chat.adapter_for_mode(mode, caller.user_id or caller.key_id)
    model = adapter or chat.settings.llm_model_local
    messages = [ChatMessage(role="system", content=mode.system_prompt), *body.messages]
    passages, retrieval = [], None
    if retrieval_mode:
        token = RERANK.set(body.rerank)
        try:
            passages, retrieval = await chat.retrieve_passages(body.messages, body.top_k, retrieval_mode, body.paths)
        finally:
            RERANK.reset(token)
        if moderation:  # safety: prompt injection in a passage is quoted with a note, or the passage dropped
            passages = await chat.moderation.neutralise_passages(passages, moderation)
        messages = build_rag_messages(messages, passages)
    completion = ChatCompletionRequest(
        model=model,
        messages=messages,
        **body.model_dump(exclude={"mode", "messages", "top_k", "paths", "rerank", "max_tokens"}, exclude_none=True),
        # Every mode has a default answer length: a small model left unbounded rambles for minutes.
        max_tokens=body.max_tokens or mode.max_tokens or chat.settings.chat_default_max_tokens,
    )
    classification = chat.classification(caller.key_classification, x_data_classification, completion)
    served = await chat.complete(completion, model, classification, moderation)
    if adapter and served.status == 404:
        # The adapter went away since the model list was cached (a rollback or an unload): look again
        # and answer with what is loaded now instead of a 404 for a model the client never named.
        await chat.local_models(fresh=True)
        adapter, ab_variant = await chat.adapter_for_mode(mode, caller.user_id or caller.key_id)
        model = adapter or chat.settings.llm_model_local
        completion = completion.model_copy(update={"model": model})
        served = await chat.complete(completion, model, classification, moderation)
    extra: dict[str, Any] = {"mode": body.mode, "adapter": adapter if served.model == adapter else None,
                             "upstream": served.tier.value}
    if retrieval is not None:
        extra["retrieval"] = retrieval
        extra["sources"] = [p.citation() for p in passages]  # what was retrieved; `citations`: what was cited
        if served.chunks is not None:
            served.chunks = stream_with_citations(served.chunks, passages, extra)
        elif served.status < 400 and served.body:
            served.body, extra["citations"], extra["citations_from"] = cite_completion(served.body, passages)
    headers = chat.response_headers(served, classification)
    headers["x-tutorstack-mode"] = body.mode
    if mode.adapter:
        served_adapter = adapter if served.model == adapter else None
        headers["x-tutorstack-adapter"] = served_adapter or "base"
        chat.mode_requests.labels(mode.name, served_adapter or "base", ab_variant or "none").inc()
    if ab_variant:
        headers["x-tutorstack-ab-variant"] = ab_variant
        extra["ab_variant"] = ab_variant
    if retrieval is not None:
        headers["x-tutorstack-retrieval"] = retrieval["status"]
    return _respond(served, headers, extra)
