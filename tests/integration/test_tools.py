"""Tool calling end to end with the real embedded model: the openai SDK with `tools` (plain and
streamed) through the gateway, and the server-side loop of /v1/chat_with_tools with each built-in
tool, a bad argument and the step limit."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

BASE_MODEL = "SmolLM2-135M-Instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def sdk(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=0, timeout=180)


def tools_chat(stack, body: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/v1/chat_with_tools", json=body, timeout=300,
                      headers={"authorization": f"Bearer {key or stack.api_key}"})


def test_sdk_tool_choice_required_gives_a_well_formed_call(stack):
    completion = sdk(stack).chat.completions.create(model=BASE_MODEL, messages=ASK, tools=[WEATHER],
                                                    tool_choice="required", max_tokens=60, temperature=0)
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments.get("city"), str)


def test_sdk_named_tool_streams_tool_call_deltas(stack):
    stream = sdk(stack).chat.completions.create(
        model=BASE_MODEL, messages=ASK, tools=[WEATHER], max_tokens=60, temperature=0, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    name, arguments, deltas = "", "", 0
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                deltas += 1
                name += call.function.name or "" if call.function else ""
                arguments += call.function.arguments or "" if call.function else ""
    assert deltas >= 1 and name == "get_weather"
    assert "city" in json.loads(arguments)


def test_sdk_tool_messages_round_trip(stack):
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21, "sky": "sunny"}'}]
    completion = sdk(stack).chat.completions.create(model=BASE_MODEL, messages=messages, tools=[WEATHER],
                                                    tool_choice="none", max_tokens=40, temperature=0)
    assert completion.choices[0].message.content.strip()


def test_server_loop_searches_the_course_and_answers_with_a_trace(stack):
    response = tools_chat(stack, {"messages": [{"role": "user", "content": "What makes a thesis statement strong?"}],
                                  "builtin_tools": ["search_course_docs"], "max_tokens": 60,
                                  "tool_choice": {"type": "function", "function": {"name": "search_course_docs"}}})
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["tool_trace"][0]
    assert first["tool"] == "search_course_docs" and first["status"] == "ok" and first["source"] == "builtin"
    assert "data/samples/course_reader" in json.dumps(first["result"])  # passages with their citations
    assert body["stopped"] in ("answered", "step_limit") and body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("tool", ["analyze_writing", "get_learner_profile"])
def test_server_loop_runs_the_other_builtin_tools(stack, tool):
    key = stack.key_for(f"tools-{tool}", user_id="student-tools")
    response = tools_chat(stack, {"messages": [{"role": "user", "content": "Please check my essay: Dogs are good. "
                                                "They are loyal. I like them."}],
                                  "builtin_tools": [tool], "max_steps": 1, "max_tokens": 40,
                                  "tool_choice": {"type": "function", "function": {"name": tool}}}, key=key)
    assert response.status_code == 200, response.text
    step = response.json()["tool_trace"][0]
    assert step["tool"] == tool and step["status"] == "ok", step
    result = step["result"]
    # The service behind the tool answers, or the tool says plainly that it is not available.
    assert isinstance(result, (dict, str)) and ("available" not in result or result["available"] is False)


def test_a_bad_argument_goes_back_to_the_model_not_a_500(faults):
    faults.local_proxy.set_mode("script", script="I could not search, sorry.",
                                tool_call={"name": "search_course_docs", "arguments": '{"query": 42}'})
    response = tools_chat(faults, {"messages": [{"role": "user", "content": "thesis?"}], "decision": "native",
                                   "builtin_tools": ["search_course_docs"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool_trace"][0]["status"] == "invalid_arguments" and "query" in body["tool_trace"][0]["error"]
    assert body["choices"][0]["message"]["content"] == "I could not search, sorry."
    chats = [json.loads(b) for b in faults.local_proxy.bodies_seen if b.startswith(b"{") and b'"messages"' in b]
    tool_messages = [m for m in chats[-1]["messages"] if m["role"] == "tool"]
    assert "invalid arguments" in tool_messages[0]["content"]


def test_the_step_limit_holds(stack):
    response = tools_chat(stack, {"messages": [{"role": "user", "content": "Find passages on topic sentences."}],
                                  "builtin_tools": ["search_course_docs"], "tool_choice": "required",
                                  "max_steps": 1, "max_tokens": 40})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["steps"] == 1 and body["stopped"] == "step_limit" and len(body["tool_trace"]) >= 1
    assert body["choices"][0]["message"].get("content")


def test_client_tools_are_returned_as_tool_calls(stack):
    response = tools_chat(stack, {"messages": ASK, "builtin_tools": [], "tools": [WEATHER], "max_tokens": 60,
                                  "tool_choice": "required"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stopped"] == "client_tool_calls" and body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
