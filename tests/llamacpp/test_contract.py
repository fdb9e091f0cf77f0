"""The OpenAI API contract ai_service relies on, checked on both engines with the same requests:
max_tokens, stop, streaming (same text as non-streaming at temperature 0), structured output,
/v1/models with the adapters, the model name echoed back, and vLLM-shaped errors."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.stack import BASE_MODEL, SAMPLE_ADAPTER

pytestmark = pytest.mark.integration
PROMPT = [{"role": "user", "content": "Write three sentences about how to plan an argumentative essay."}]


@pytest.fixture(params=["vllm", "llamacpp"], scope="module")
def engine(request):
    return request.getfixturevalue("vllm_stack" if request.param == "vllm" else "llamacpp_engine")


def post(engine, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{engine.vllm_url}/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {engine.api_key}"}, **kwargs)


def chat(engine, **body) -> dict:
    response = post(engine, {"model": BASE_MODEL, "messages": PROMPT, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_models_lists_the_base_model_and_the_adapter_with_its_parent(engine):
    response = httpx.get(f"{engine.vllm_url}/v1/models", headers={"Authorization": f"Bearer {engine.api_key}"})
    rows = {m["id"]: m for m in response.raise_for_status().json()["data"]}
    assert rows[BASE_MODEL].get("parent") is None
    assert rows[SAMPLE_ADAPTER]["parent"] == BASE_MODEL


def test_max_tokens_is_honoured(engine):
    reply = chat(engine, max_tokens=5)
    assert reply["usage"]["completion_tokens"] == 5
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["model"] == BASE_MODEL


def test_stop_cuts_the_text_where_the_stop_string_starts(engine):
    free = chat(engine, max_tokens=40)["choices"][0]["message"]["content"]
    words = free.split()
    assert len(words) > 6, free
    stop = " " + words[4]  # chosen from the engine's own greedy text, so the stop is really reached
    cut = chat(engine, max_tokens=40, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert stop not in cut["message"]["content"]
    assert cut["message"]["content"] == free[:free.index(stop)]


def test_streaming_gives_the_same_text_in_chunks_and_ends_with_done(engine):
    expected = chat(engine, model=SAMPLE_ADAPTER, max_tokens=16)["choices"][0]["message"]["content"]
    body = {"model": SAMPLE_ADAPTER, "messages": PROMPT, "temperature": 0, "max_tokens": 16, "stream": True}
    with httpx.stream("POST", f"{engine.vllm_url}/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {engine.api_key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == SAMPLE_ADAPTER for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 2
    assert text == expected


def test_structured_output_follows_the_json_schema(engine):
    schema = {"type": "object", "properties": {"verdict": {"enum": ["clear", "unclear"]}}, "required": ["verdict"],
              "additionalProperties": False}
    reply = chat(engine, max_tokens=30, messages=[
        {"role": "user", "content": "Is this thesis clear? 'Homework should be optional.' Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}})
    assert json.loads(reply["choices"][0]["message"]["content"])["verdict"] in ("clear", "unclear")


def test_errors_are_openai_shaped(engine):
    unknown = post(engine, {"model": "nosuch-v1", "messages": PROMPT, "max_tokens": 4})
    assert unknown.status_code == 404
    assert "nosuch-v1" in unknown.json()["error"]["message"]
    no_key = httpx.post(f"{engine.vllm_url}/v1/chat/completions", json={"model": BASE_MODEL, "messages": PROMPT})
    assert no_key.status_code == 401
    bad = post(engine, {"model": BASE_MODEL, "messages": "not a list", "max_tokens": 4})
    assert 400 <= bad.status_code < 500 and bad.json()["error"]["message"]
