"""The server-side tool loop of /v1/chat_with_tools, as logic with no FastAPI in it.

The model proposes calls, the loop runs the built-in tools, hands the results back and repeats
until the model answers, the step limit is reached, or the model calls a tool that the *client*
defined (returned to the client as `tool_calls`, as OpenAI does).

Small models are poor at deciding to call a tool, and poorer at writing its JSON. With
`decision="guided"` (the default) each step is two structured-output requests: the model picks the
next action from a closed list (`answer` or a tool name, vLLM's guided choice), then writes the
chosen tool's arguments under that tool's JSON schema (a named `tool_choice`). Every call is
therefore well-formed; arguments are still validated against the schema before a tool runs, and
an invalid one goes back to the model as a tool error, never a 500. `decision="native"` leaves the
choice to the model (`tool_choice: auto`), for models trained for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

# One LLM call: (messages, extra request fields) -> an OpenAI chat.completion dict.
Complete = Callable[[list[dict], dict], Awaitable[dict]]
ToolRunner = Callable[[dict], Awaitable[dict]]
Decision = Literal["guided", "native"]

ANSWER = "answer"
CALL_MAX_TOKENS = 200
DECISION_PROMPT = (
    "Decide the next step. Reply with one option only: '{answer}' to answer the user now, or the name "
    "of one tool to call first.\nTools:\n{tools}"
)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolRunner | None = None  # None: defined by the client, which runs it itself

    @property
    def builtin(self) -> bool:
        return self.run is not None

    def openai_spec(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass
class TraceStep:
    step: int
    tool: str
    arguments: Any
    source: Literal["builtin", "client", "unknown"]
    status: Literal["ok", "invalid_arguments", "error", "timeout", "returned_to_client", "unknown_tool"]
    duration_ms: float = 0.0
    result: Any = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class LoopResult:
    completion: dict  # the final chat.completion (an answer, or client tool_calls)
    trace: list[TraceStep] = field(default_factory=list)
    steps: int = 0
    stopped: Literal["answered", "step_limit", "client_tool_calls"] = "answered"
    builtin_results: list[dict] = field(default_factory=list)  # tool messages for client-returned turns


def validate_arguments(tool: Tool, raw: Any) -> tuple[dict | None, str | None]:
    """The call's arguments as a dict when they are JSON that fits the tool's schema, else an error."""
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        return None, f"arguments are not JSON: {exc}"
    if not isinstance(arguments, dict):
        return None, "arguments must be a JSON object"
    try:
        jsonschema.validate(arguments, tool.parameters or {"type": "object"})
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
        return None, f"{where}: {exc.message}"
    return arguments, None


class ToolLoop:
    def __init__(self, complete: Complete, tools: list[Tool], *, max_steps: int = 4, tool_timeout: float = 15.0,
                 decision: Decision = "guided", max_tokens: int = 256):
        self.complete = complete
        self.tools = {tool.name: tool for tool in tools}
        self.max_steps = max_steps
        self.tool_timeout = tool_timeout
        self.decision = decision
        self.max_tokens = max_tokens

    def specs(self) -> list[dict]:
        return [tool.openai_spec() for tool in self.tools.values()]

    async def run(self, messages: list[dict], tool_choice: Any = "auto") -> LoopResult:
        messages = list(messages)
        trace: list[TraceStep] = []
        for step in range(1, self.max_steps + 1):
            choice = tool_choice if step == 1 else "auto"
            if choice == "none":
                break
            proposal = await self._propose(messages, choice)
            message = proposal["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            if not calls:
                return LoopResult(proposal, trace, step, "answered")
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            client_calls, results = [], []
            for call in calls:
                outcome, tool_message = await self._execute(step, call)
                trace.append(outcome)
                if outcome.status == "returned_to_client":
                    client_calls.append(call)
                else:
                    results.append(tool_message)
            if client_calls:
                proposal["choices"][0]["finish_reason"] = "tool_calls"
                return LoopResult(proposal, trace, step, "client_tool_calls", builtin_results=results)
            messages.extend(results)
        else:
            step = self.max_steps
            final = await self.complete(messages, {"tools": self.specs(), "tool_choice": "none",
                                                   "max_tokens": self.max_tokens})
            return LoopResult(final, trace, step, "step_limit")
        final = await self.complete(messages, {"max_tokens": self.max_tokens})
        return LoopResult(final, trace, 0, "answered")

    async def _propose(self, messages: list[dict], choice: Any) -> dict:
        """One step's proposal: an answer, or tool calls that are well-formed by construction."""
        if choice == "auto" and self.decision == "guided":
            picked = await self._pick_action(messages)
            if picked == ANSWER:
                return await self.complete(messages, {"max_tokens": self.max_tokens})
            choice = {"type": "function", "function": {"name": picked}}
        elif choice == "required" and self.decision == "guided":
            picked = await self._pick_action(messages, allow_answer=False)
            choice = {"type": "function", "function": {"name": picked}}
        # A call's arguments need room: cut short, they are not JSON (a small model rambles in strings).
        return await self.complete(messages, {"tools": self.specs(), "tool_choice": choice,
                                              "max_tokens": max(self.max_tokens, CALL_MAX_TOKENS)})

    async def _pick_action(self, messages: list[dict], allow_answer: bool = True) -> str:
        options = ([ANSWER] if allow_answer else []) + list(self.tools)
        if len(options) == 1:
            return options[0]
        listing = "\n".join(f"- {tool.name}: {tool.description}" for tool in self.tools.values())
        prompt = DECISION_PROMPT.format(answer=ANSWER, tools=listing)
        decision = await self.complete(messages + [{"role": "system", "content": prompt}],
                                       {"structured_outputs": {"choice": options}, "max_tokens": 16,
                                        "temperature": 0})
        text = (decision["choices"][0]["message"].get("content") or "").strip()
        return text if text in options else options[0]

    async def _execute(self, step: int, call: dict) -> tuple[TraceStep, dict]:
        function = call.get("function") or {}
        name, raw = function.get("name", ""), function.get("arguments", "{}")
        tool = self.tools.get(name)
        if tool is None:
            error = f"there is no tool named {name!r}; tools: {', '.join(self.tools)}"
            return (TraceStep(step, name, raw, "unknown", "unknown_tool", error=error),
                    _tool_message(call, {"error": error}))
        if not tool.builtin:
            return TraceStep(step, name, _parsed(raw), "client", "returned_to_client"), {}
        arguments, error = validate_arguments(tool, raw)
        if error:
            return (TraceStep(step, name, _parsed(raw), "builtin", "invalid_arguments", error=error),
                    _tool_message(call, {"error": f"invalid arguments: {error}"}))
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(tool.run(arguments), self.tool_timeout)
            status, error = "ok", None
        except TimeoutError:
            result, status, error = {"error": f"the tool took longer than {self.tool_timeout:g}s"}, "timeout", "timeout"
        except Exception as exc:  # a tool's failure is the model's information, not the request's failure
            result, status, error = {"error": f"{type(exc).__name__}: {exc}"[:300]}, "error", str(exc)[:300]
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return (TraceStep(step, name, arguments, "builtin", status, elapsed, _preview(result), error),
                _tool_message(call, result))


def _tool_message(call: dict, result: Any) -> dict:
    return {"role": "tool", "tool_call_id": call.get("id") or "", "content": json.dumps(result, ensure_ascii=False)}


def _parsed(raw: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


def _preview(result: Any, limit: int = 600) -> Any:
    text = json.dumps(result, ensure_ascii=False)
    return result if len(text) <= limit else text[:limit] + "…"
