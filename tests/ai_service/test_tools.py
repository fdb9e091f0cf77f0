"""The tool loop's decisions with a scripted model (what it is asked, what it returns): built-in
calls run, bad arguments go back as tool errors, the step limit holds, client tools are returned,
slow tools time out. The loop against the real model is in tests/integration/test_tools.py."""

import asyncio
import json

from ai_service.tools import ANSWER, Tool, ToolLoop, validate_arguments

SEARCH_SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "minLength": 1}},
                 "required": ["query"], "additionalProperties": False}


def completion(content=None, calls=None):
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": name, "arguments": args}} for i, (name, args) in enumerate(calls)]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}]}


class ScriptedModel:
    """Answers each request from a list, and records what it was asked."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    async def __call__(self, messages, extra):
        self.requests.append((messages, extra))
        answer = self.answers.pop(0)
        return answer(messages, extra) if callable(answer) else answer


def search_tool(calls):
    async def run(args):
        calls.append(args)
        return {"passages": [{"path": "reader.md", "text": f"about {args['query']}"}]}
    return Tool("search_course_docs", "search", SEARCH_SCHEMA, run)


def test_guided_loop_picks_a_tool_runs_it_then_answers():
    ran = []
    model = ScriptedModel(
        completion("search_course_docs"),  # step 1: the guided choice
        completion(calls=[("search_course_docs", '{"query": "thesis"}')]),  # the call, under the tool's schema
        completion(ANSWER),  # step 2: the guided choice
        completion("A thesis makes a claim."),
    )
    result = asyncio.run(ToolLoop(model, [search_tool(ran)]).run([{"role": "user", "content": "thesis?"}]))
    assert ran == [{"query": "thesis"}]
    assert result.stopped == "answered" and result.completion["choices"][0]["message"]["content"] == "A thesis makes a claim."
    assert [(t.tool, t.status) for t in result.trace] == [("search_course_docs", "ok")]
    choice_request = model.requests[0][1]
    assert choice_request["structured_outputs"] == {"choice": [ANSWER, "search_course_docs"]}
    assert model.requests[1][1]["tool_choice"] == {"type": "function", "function": {"name": "search_course_docs"}}
    tool_message = model.requests[3][0][-1]
    assert tool_message["role"] == "tool" and "about thesis" in tool_message["content"]


def test_bad_arguments_go_back_to_the_model_as_a_tool_error():
    ran = []
    model = ScriptedModel(
        completion(calls=[("search_course_docs", '{"q": 1}')]),
        completion("Sorry, let me answer directly."),
    )
    loop = ToolLoop(model, [search_tool(ran)], decision="native")
    result = asyncio.run(loop.run([{"role": "user", "content": "x"}]))
    assert ran == [] and result.trace[0].status == "invalid_arguments"
    assert "query" in result.trace[0].error
    error_message = model.requests[1][0][-1]
    assert error_message["role"] == "tool" and "invalid arguments" in error_message["content"]


def test_the_step_limit_forces_an_answer():
    ran = []
    always_call = completion(calls=[("search_course_docs", '{"query": "again"}')])
    model = ScriptedModel(always_call, always_call, completion("Final."))
    result = asyncio.run(ToolLoop(model, [search_tool(ran)], max_steps=2, decision="native").run(
        [{"role": "user", "content": "x"}]))
    assert len(ran) == 2 and result.stopped == "step_limit" and result.steps == 2
    assert model.requests[-1][1]["tool_choice"] == "none"
    assert result.completion["choices"][0]["message"]["content"] == "Final."


def test_calls_to_client_tools_are_returned_to_the_client():
    ran = []
    weather = Tool("get_weather", "the client's own", {"type": "object"})
    model = ScriptedModel(completion(calls=[("search_course_docs", '{"query": "q"}'), ("get_weather", '{"city": "Oslo"}')]))
    result = asyncio.run(ToolLoop(model, [search_tool(ran), weather], decision="native").run(
        [{"role": "user", "content": "x"}]))
    assert result.stopped == "client_tool_calls"
    assert result.completion["choices"][0]["finish_reason"] == "tool_calls"
    assert [t.status for t in result.trace] == ["ok", "returned_to_client"]
    assert result.builtin_results[0]["role"] == "tool" and ran == [{"query": "q"}]


def test_a_slow_or_failing_tool_becomes_a_tool_error():
    async def slow(_):
        await asyncio.sleep(5)

    async def broken(_):
        raise ConnectionError("service down")

    tools = [Tool("slow", "s", {"type": "object"}, slow), Tool("broken", "b", {"type": "object"}, broken)]
    model = ScriptedModel(completion(calls=[("slow", "{}"), ("broken", "{}"), ("nosuch", "{}")]), completion("ok"))
    result = asyncio.run(ToolLoop(model, tools, tool_timeout=0.2, decision="native").run([{"role": "user", "content": "x"}]))
    assert [t.status for t in result.trace] == ["timeout", "error", "unknown_tool"]
    contents = [json.loads(m["content"]) for m in model.requests[1][0] if m["role"] == "tool"]
    assert all("error" in c for c in contents) and len(contents) == 3


def test_a_guided_choice_outside_the_options_falls_back_to_answering():
    model = ScriptedModel(completion("banana"), completion("Plain answer."))
    result = asyncio.run(ToolLoop(model, [search_tool([])]).run([{"role": "user", "content": "x"}]))
    assert result.stopped == "answered" and result.trace == []


def test_validate_arguments():
    tool = Tool("t", "", SEARCH_SCHEMA, None)
    assert validate_arguments(tool, '{"query": "a"}') == ({"query": "a"}, None)
    assert validate_arguments(tool, "not json")[1].startswith("arguments are not JSON")
    assert validate_arguments(tool, "[1]")[1] == "arguments must be a JSON object"
    assert "query" in validate_arguments(tool, '{"query": ""}')[1]
