"""POST /v1/chat_with_tools: the tool loop (ai_service/tools.py) run on the server, with the
platform's built-in tools: course search (graphrag), writing analysis (the writing service) and the
caller's own learner profile (the guided service)."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ai_service.auth import gateway_caller
from ai_service.chat import ChatEngine
from ai_service.rag import RetrievalUnavailable, last_user_text, retrieve
from ai_service.tools import Tool, ToolLoop
from ai_service.upstreams import _completion_as_sse
from common.auth import Caller, service_headers
from common.errors import OpenAIError
from common.protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice, ToolDefinition

router = APIRouter(prefix="/v1")
BUILTIN_TOOL_NAMES = ("search_course_docs", "analyze_writing", "get_learner_profile")


class ToolChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(default="", max_length=256, description="'' = the base model; or an adapter / family")
    builtin_tools: list[Literal["search_course_docs", "analyze_writing", "get_learner_profile"]] | None = Field(
        default=None, description="built-in tools the model may call (default: all)")
    tools: list[ToolDefinition] | None = Field(
        default=None, max_length=32, description="the client's own tools: calls to them are returned as tool_calls")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice = "auto"
    max_steps: int = Field(default=4, ge=1, le=8, description="tool-calling rounds before the model must answer")
    decision: Literal["guided", "native"] | None = Field(
        default=None, description="how the model picks a tool: guided (structured output; default) or native")
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False


class ToolTraceEntry(BaseModel):
    step: int
    tool: str
    arguments: Any = None
    source: Literal["builtin", "client", "unknown"]
    status: Literal["ok", "invalid_arguments", "error", "timeout", "returned_to_client", "unknown_tool"]
    duration_ms: float = 0.0
    result: Any = None
    error: str | None = None


class ToolChatResponse(BaseModel):
    """An OpenAI chat.completion plus what the loop did."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    tool_trace: list[ToolTraceEntry] = Field(description="every tool call the loop saw, in order")
    steps: int = Field(description="tool-calling rounds used")
    stopped: Literal["answered", "step_limit", "client_tool_calls"]
    builtin_results: list[dict[str, Any]] = Field(
        default_factory=list, description="with client tool_calls: the built-in results to send back as tool messages")


def builtin_tools(request: Request, caller: Caller, names: list[str], user_text: str = "") -> list[Tool]:
    engine: ChatEngine = request.app.state.engine
    services = request.app.state.services

    async def search_course_docs(args: dict) -> dict:
        if not engine.settings.graph_rag_enabled:
            return {"available": False, "error": "course search is turned off"}
        try:
            passages = await retrieve(engine._graphrag, engine.settings.graph_rag_url, args["query"],
                                      args.get("top_k", 3), "hybrid")
        except RetrievalUnavailable as exc:
            return {"available": False, "error": str(exc)}
        return {"passages": [{"number": p.number, "text": p.text[:800], **{k: v for k, v in p.citation().items()
                                                                             if k in ("path", "start_line", "end_line")}}
                             for p in passages]}

    async def analyze_writing(args: dict) -> dict:
        # The text is the learner's own last message, never retyped by the model: a small model copying
        # an essay into a JSON string would take minutes and change it on the way.
        content = user_text
        if not content.strip():
            return {"error": "there is no text from the user to analyse"}
        try:
            response = await services.client("writing").post(
                "/v1/writing/analyze", json={"content": content, "writing_type": args.get("writing_type", "essay"),
                                             "student_profile": {"level": "unknown", "lang": args.get("lang", "en")}},
                headers=service_headers(services.token("writing"), caller), timeout=30)
        except httpx.HTTPError as exc:
            return {"available": False, "error": f"writing analysis is not available ({type(exc).__name__})"}
        if response.status_code >= 500:
            return {"available": False, "error": f"writing analysis is not available (HTTP {response.status_code})"}
        body = response.json()
        if response.status_code >= 400:
            return {"error": body.get("error", {}).get("message", f"HTTP {response.status_code}")}
        return {key: body[key] for key in ("scores", "overall", "feedback", "issues") if key in body}

    async def get_learner_profile(args: dict) -> dict:
        if not caller.user_id:
            return {"error": "this API key acts for no user, so there is no learner profile to read"}
        params = {"course_id": args["course_id"]} if args.get("course_id") else {}
        try:
            response = await services.client("guided").get(
                f"/v1/learners/{caller.user_id}", params=params,
                headers=service_headers(services.token("guided"), caller), timeout=10)
        except httpx.HTTPError as exc:
            return {"available": False, "error": f"learner profiles are not available ({type(exc).__name__})"}
        if response.status_code >= 400:
            return {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
        return response.json()

    catalogue = {
        "search_course_docs": Tool(
            "search_course_docs", "Search the course reader; returns passages with file and line citations.",
            {"type": "object", "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 200},
                                              "top_k": {"type": "integer", "minimum": 1, "maximum": 8}},
             "required": ["query"], "additionalProperties": False}, search_course_docs),
        "analyze_writing": Tool(
            "analyze_writing", "Score the text in the user's last message against the writing rubric and list "
                               "what to fix.",
            {"type": "object", "properties": {
                "writing_type": {"type": "string", "enum": ["essay", "argumentative", "narrative", "literature_review",
                                                            "summary", "research_proposal"]},
                "lang": {"type": "string", "enum": ["en", "zh"]}},
             "additionalProperties": False}, analyze_writing),
        "get_learner_profile": Tool(
            "get_learner_profile", "Read the current learner's skills, mastery and weak points.",
            {"type": "object", "properties": {"course_id": {"type": "string", "maxLength": 64}},
             "additionalProperties": False}, get_learner_profile),
    }
    return [catalogue[name] for name in names]


@router.post("/chat_with_tools", response_model=ToolChatResponse)
async def chat_with_tools(body: ToolChatRequest, request: Request, caller: Caller = Depends(gateway_caller)):
    """Runs the tool loop on the server and returns the final answer with the trace of calls."""
    engine: ChatEngine = request.app.state.engine
    settings = engine.settings
    names = list(dict.fromkeys(body.builtin_tools if body.builtin_tools is not None else BUILTIN_TOOL_NAMES))
    tools = builtin_tools(request, caller, names, last_user_text(body.messages))
    for definition in body.tools or []:
        if definition.function.name in names:
            raise OpenAIError(400, f"tool {definition.function.name!r} is a built-in tool; name yours differently",
                              param="tools", code="duplicate_tool")
        tools.append(Tool(definition.function.name, definition.function.description or "",
                          definition.function.parameters or {"type": "object"}))
    if isinstance(body.tool_choice, NamedToolChoice) and body.tool_choice.function.name not in {t.name for t in tools}:
        raise OpenAIError(400, f"tool_choice names {body.tool_choice.function.name!r}, which is not a tool here",
                          param="tool_choice", code="unknown_tool")
    if not tools and body.tool_choice == "required":
        raise OpenAIError(400, "tool_choice is 'required' but no tool is enabled", param="tool_choice")
    model = await engine.resolve_model(body.model)
    # safety (ai_service/moderation.py): the student's message once, tool results at every step, each answer
    moderation = engine.moderation and engine.moderation.context(request, "tools", caller)

    async def complete(messages: list[dict], extra: dict) -> dict:
        fields = {"temperature": body.temperature, **extra}
        request_model = ChatCompletionRequest(model=model, messages=messages,
                                              **{k: v for k, v in fields.items() if v is not None})
        # Tool results carry course and learner data: the loop never leaves for the cloud tier.
        served = await engine.complete(request_model, model, "private", moderation)
        if served.status >= 400:
            raise OpenAIError(served.status, (served.body or {}).get("error", {}).get("message", "upstream error"),
                              code="upstream_client_error")
        return served.body

    loop = ToolLoop(complete, tools, max_steps=body.max_steps, tool_timeout=settings.tool_timeout_sec,
                    decision=body.decision or settings.tools_decision,
                    max_tokens=body.max_tokens or settings.chat_default_max_tokens)
    choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedToolChoice) else body.tool_choice
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    headers = {"x-tutorstack-upstream": "local", "x-tutorstack-data-classification": "private"}
    if moderation:  # safety: a flagged message is refused (400) or, for self-harm, answered with the template
        verdict = await engine.moderation.check_input(messages, moderation)
        if verdict.respond is not None:
            from ai_service.moderation import answer_completion, completion_sse

            answer = answer_completion(verdict.respond, model, moderation)
            if body.stream:
                return StreamingResponse(completion_sse(answer), media_type="text/event-stream", headers=headers)
            return JSONResponse({**answer, "tool_trace": [], "steps": 0, "stopped": "answered"}, headers=headers)
        messages = verdict.messages
    result = await loop.run(messages, choice)
    extra = {"tool_trace": [step.as_dict() for step in result.trace], "steps": result.steps, "stopped": result.stopped,
             "builtin_results": result.builtin_results}
    if moderation and moderation.summary():  # safety
        extra["moderation"] = moderation.summary()
    if body.stream:
        async def events():
            async for chunk in _completion_as_sse(result.completion):
                if chunk.startswith(b"data: [DONE]"):
                    yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [], **extra})}\n\n".encode()
                yield chunk

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
    return JSONResponse({**result.completion, **extra}, headers=headers)
