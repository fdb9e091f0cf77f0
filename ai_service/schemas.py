"""Response models of ai_service's own public routes, for its OpenAPI schema (and so docs/openapi.json).

Documentation only: the chat routes answer with the upstream's JSON as it came, plus the platform's fields,
or relay its SSE stream, and are never validated or serialised through these models at run time (the
completions route has an ASGI fast lane whose cost is benchmarked). The routes declare them with
`responses={200: {"model": ...}}`; tests/ai_service/test_response_models.py checks real answers against
them. Upstreams (vLLM, a cloud API) add fields of their own: every model here allows extra fields.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ai_service.moderation import ModerationInfo


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------ OpenAI chat.completion (as relayed)
class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCallOut(_Open):
    name: str
    arguments: str = Field(description="the arguments as a JSON text")


class ToolCallOut(_Open):
    id: str | None
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(_Open):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="the answer; with citations, only [n] markers that name a "
                                            "listed source are left in it")
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = Field(default=None, description="a reasoning model's thinking, when the "
                                                                    "upstream separates it (also `reasoning`)")
    reasoning: str | None = None


class Choice(_Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None = Field(description="stop | length | tool_calls | content_filter (content "
                                                  "moderation stopped or replaced the answer)")
    logprobs: dict[str, Any] | None = None


class Citation(BaseModel):
    """A course passage: where it is in the course reader, and a short snippet."""

    number: int = Field(description="the [n] that cites it in the answer")
    id: str = Field(description="graphrag's chunk id")
    path: str = Field(description="the source file in the course reader")
    heading_path: list[str] = Field(description="the headings above the passage, outermost first")
    start_line: int
    end_line: int
    snippet: str = Field(description="the passage's text, whitespace collapsed, up to about 240 characters")


class RetrievalInfo(BaseModel):
    """What retrieval did for this answer; a failing retrieval never fails the chat."""

    status: Literal["ok", "disabled", "unavailable", "rejected"] = Field(
        description="ok; disabled (GRAPH_RAG_ENABLED=false); unavailable (graphrag down, timed out, 5xx); "
                    "rejected (graphrag refused the query, 4xx)")
    passages: int = Field(description="passages put into the prompt")
    mode: Literal["keyword", "graph", "hybrid"]
    top_k: int
    detail: str | None = Field(default=None, description="why there are no passages, when status is not ok")


class ChatCompletion(_Open):
    """An OpenAI chat.completion (stream=false), as the upstream (vLLM or the cloud tier) answered it, plus
    `moderation` when content moderation flagged something the client should know."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the served model or adapter name")
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    moderation: ModerationInfo | None = Field(
        default=None, description="present when moderation flagged the request or the answer (actions other "
                                  "than log): docs/safety.md")


class ModeChatCompletion(ChatCompletion):
    """A chat.completion for a chat mode (`/v1/chat`, `/v1/chat/hybrid`), with the platform's fields."""

    mode: str = Field(description="the mode as requested (e.g. tutor, tutor_rag)")
    adapter: str | None = Field(description="the LoRA adapter that answered, null for the base model")
    upstream: Literal["local", "cloud"] = Field(description="the tier that served the answer")
    ab_variant: Literal["control", "candidate"] | None = Field(
        default=None, description="the caller's arm when the mode has an A/B split (docs/feedback.md)")
    retrieval: RetrievalInfo | None = Field(default=None, description="retrieving modes only (_rag, hybrid)")
    sources: list[Citation] | None = Field(
        default=None, description="retrieving modes only: every passage retrieved and put into the prompt")
    citations: list[Citation] | None = Field(
        default=None, description="retrieving modes only: the passages the answer cites, in order of first "
                                  "mention")
    citations_from: Literal["model", "matched", "none"] | None = Field(
        default=None, description="how the citations were found: the model's own [n] markers, sentences "
                                  "matched to passages, or none")


# ------------------------------------------------------------------ GET /v1/models
class ModelCard(_Open):
    """One model the local model server serves (vLLM's entry, passed on): the base model, or a LoRA
    adapter (`parent` names its base model)."""

    id: str = Field(description="the name to send as `model` (an adapter: <family>-v<N>)")
    object: Literal["model"] = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = Field(default=None, description="the model's path (an adapter: its directory)")
    parent: str | None = Field(default=None, description="an adapter's base model; null for the base model")
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------ streams (stream=true)
class ChunkDelta(_Open):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(_Open):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    """The JSON of one `data:` event of a streamed answer: the upstream's chat.completion.chunk (`id`,
    `created`, `model`, `choices[].delta`; `usage` last when stream_options.include_usage). When content
    moderation flagged something, the platform adds one chunk with `choices: []` and `moderation` before
    `data: [DONE]`."""

    id: str | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int | None = None
    model: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None
    moderation: ModerationInfo | None = None


class ModeChatCompletionChunk(ChatCompletionChunk):
    """One `data:` event of a chat mode's stream: as on /v1/chat/completions, and for a retrieving mode
    (_rag, hybrid) one more chunk with `choices: []` before `data: [DONE]` carrying `citations` (of the whole
    answer; matched citations have no [n] in the streamed text), `citations_from`, `sources`, `retrieval`,
    `mode`, `adapter`, `upstream` and `ab_variant` (the mode's fields are otherwise in the response headers
    x-tutorstack-mode, -adapter, -upstream, -ab-variant)."""

    mode: str | None = None
    adapter: str | None = None
    upstream: Literal["local", "cloud"] | None = None
    ab_variant: Literal["control", "candidate"] | None = None
    retrieval: RetrievalInfo | None = None
    sources: list[Citation] | None = None
    citations: list[Citation] | None = None
    citations_from: Literal["model", "matched", "none"] | None = None


def _inline(schema: dict, components: set[str]) -> dict:
    """A pydantic JSON Schema for use inside an OpenAPI document: references to `components` (models the
    route's JSON answer reaches, so FastAPI lists them under components/schemas by these names) point there;
    every other `$defs` entry is put in place of its references (the models are not recursive)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                if name in components:
                    return {"$ref": f"#/components/schemas/{name}"}
                return walk(copy.deepcopy(defs[name]))
            return {key: walk(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)


SSE_DESCRIPTION = (
    "With `stream: true`: server-sent events. Each event is one line `data: <JSON>` and a blank line; the "
    "JSON is a chat.completion.chunk (schema in `x-tutorstack-event-schema`), the last event is "
    "`data: [DONE]`. Errors after the first byte come in-band, as one OpenAI error event `data: {\"error\": "
    "{\"message\", \"type\", \"param\", \"code\"}}`: an upstream failing mid-stream (code "
    "upstream_stream_interrupted or upstream_deadline) ends the stream there; content moderation stopping "
    "the answer (code content_filtered) is followed by `data: [DONE]`.")


def sse_content(answer: type[BaseModel], chunk: type[BaseModel]) -> dict[str, Any]:
    """The `text/event-stream` media type of a streamed chat answer (events: `chunk`), for a route's
    `responses` next to its JSON `answer` model (whose nested models the chunk's schema refers to)."""
    components = set(answer.model_json_schema(mode="serialization").get("$defs", {})) | {answer.__name__}
    return {"text/event-stream": {
        "schema": {"type": "string", "description": SSE_DESCRIPTION},
        "x-tutorstack-event-schema": _inline(chunk.model_json_schema(mode="serialization"), components),
    }}


def chat_responses(answer: type[BaseModel], chunk: type[BaseModel], description: str) -> dict[int, dict[str, Any]]:
    """`responses=` of a chat route: the JSON answer's model and the SSE stream (documentation only)."""
    return {200: {"model": answer, "description": description, "content": sse_content(answer, chunk)}}
