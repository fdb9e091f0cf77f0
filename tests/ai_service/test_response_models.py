"""ai_service's public answers validate against the response models its OpenAPI schema declares
(ai_service/schemas.py, declared with `responses=` for documentation only), so the models cannot drift from
the code: the real app in-process, a stub OpenAI upstream (answers as vLLM does, citing passage [1]) and the
real graphrag app on a fixture course, plain and streamed; moderation's answers from its own functions."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ai_service.moderation import Context, ModerationInfo, answer_completion, completion_sse
from ai_service.schemas import (ChatCompletion, ChatCompletionChunk, ModeChatCompletion, ModeChatCompletionChunk,
                                ModelList)
from tests.graphrag.course import write_course
from tests.support.processes import serve_in_thread

TOKEN = "models-token"
GRAPHRAG_TOKEN = "models-graphrag-token"
HEADERS = {"x-tutorstack-gateway-token": TOKEN, "x-tutorstack-key-id": "k1",
           "x-tutorstack-key-classification": "private", "x-tutorstack-user-id": "u1"}
QUESTION = [{"role": "user", "content": "What is a thesis statement?"}]
ANSWER = ["A thesis statement ", "is the main claim ", "of an essay [1]."]


def stub_upstream():
    """An OpenAI-compatible upstream shaped like vLLM's answers (plain, and streamed with usage last)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    meta = {"id": "chatcmpl-stub", "created": 1764400000, "model": "stub"}

    async def completions(request):
        body = await request.json()
        usage = {"prompt_tokens": 40, "completion_tokens": len(ANSWER), "total_tokens": 40 + len(ANSWER)}
        if not body.get("stream"):
            return JSONResponse({**meta, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER), "tool_calls": []},
                 "logprobs": None, "finish_reason": "stop", "stop_reason": None}]})

        async def events():
            for i, piece in enumerate(ANSWER):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                choice = {"index": 0, "delta": delta, "logprobs": None,
                          "finish_reason": "stop" if i == len(ANSWER) - 1 else None}
                yield f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                last = {**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_):
        return JSONResponse({"object": "list", "data": [
            {"id": "stub", "object": "model", "created": 1764400000, "owned_by": "vllm", "root": "/models/stub",
             "parent": None, "max_model_len": 2048, "permission": []}]})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/models", models)])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from ai_service.app import create_app
    from ai_service.settings import AIServiceSettings
    from graphrag.app import create_app as create_graphrag
    from graphrag.builder import BuildOptions, build_index
    from graphrag.settings import GraphRAGSettings

    tmp = tmp_path_factory.mktemp("response_models")
    build_index(write_course(tmp / "course"), tmp / "index", options=BuildOptions("none"), progress=None)
    graphrag = create_graphrag(GraphRAGSettings(_env_file=None, app_env="test", graph_rag_index_path=tmp / "index",
                                                GRAPHRAG_API_TOKEN=GRAPHRAG_TOKEN))
    with serve_in_thread(stub_upstream(), lifespan="off") as upstream, serve_in_thread(graphrag) as graphrag_url:
        settings = AIServiceSettings(
            _env_file=None, app_env="test", ai_gateway_shared_token=TOKEN, ai_service_internal_token="internal",
            llm_base_url_local=f"{upstream}/v1", llm_api_key_local="stub-key", llm_model_local="stub",
            graph_rag_enabled=True, graph_rag_url=graphrag_url, graphrag_api_token=GRAPHRAG_TOKEN,
            safety_enabled=False)
        with TestClient(create_app(settings)) as test_client:
            yield test_client


def declared_only(body: dict, model: type[BaseModel], where: str) -> None:
    """Every field the platform answers with is one the model declares (the models allow an upstream's own
    extra fields, so this is what catches a new platform field left undocumented)."""
    assert set(body) <= set(model.model_fields), f"{where}: undeclared {sorted(set(body) - set(model.model_fields))}"


def events(response, model: type[BaseModel] = ChatCompletionChunk) -> list[dict]:
    assert response.headers["content-type"].startswith("text/event-stream")
    datas = [line[5:].strip() for line in response.text.split("\n") if line.startswith("data:")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(data) for data in datas[:-1]]
    for chunk in chunks:
        model.model_validate(chunk)
        declared_only(chunk, model, "chunk")
    return chunks


def test_chat_completions_plain_and_streamed(client):
    response = client.post("/v1/chat/completions", json={"model": "", "messages": QUESTION, "max_tokens": 8},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    ChatCompletion.model_validate(body)
    declared_only(body, ChatCompletion, "/v1/chat/completions")
    assert body["choices"][0]["message"]["content"]

    streamed = client.post("/v1/chat/completions", headers=HEADERS,
                           json={"messages": QUESTION, "max_tokens": 8, "stream": True})
    assert streamed.status_code == 200
    chunks = events(streamed)
    assert len(chunks) >= 2 and all(chunk["choices"] for chunk in chunks)


def test_models(client):
    response = client.get("/v1/models", headers=HEADERS)
    assert response.status_code == 200, response.text
    listing = ModelList.model_validate(response.json())
    assert [card.id for card in listing.data] == ["stub"]


def test_mode_chat_carries_the_mode_fields(client):
    response = client.post("/v1/chat", json={"mode": "tutor", "messages": QUESTION, "max_tokens": 8},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    answer = ModeChatCompletion.model_validate(body)
    declared_only(body, ModeChatCompletion, "/v1/chat")
    assert (answer.mode, answer.adapter, answer.upstream) == ("tutor", None, "local")
    assert "citations" not in body  # only retrieving modes cite


@pytest.mark.parametrize("path, mode", [("/v1/chat/hybrid", "tutor"), ("/v1/chat", "tutor_rag")])
def test_retrieving_chat_carries_citations_plain_and_streamed(client, path, mode):
    request = {"mode": mode, "messages": QUESTION, "max_tokens": 8, "top_k": 3}
    response = client.post(path, json=request, headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    answer = ModeChatCompletion.model_validate(body)
    declared_only(body, ModeChatCompletion, path)
    assert answer.retrieval.status == "ok" and answer.retrieval.passages == len(answer.sources) > 0
    assert [c.number for c in answer.citations] == [1] and answer.citations_from == "model"
    assert answer.citations[0].path.startswith("english/")

    chunks = events(client.post(path, json={**request, "stream": True}, headers=HEADERS), ModeChatCompletionChunk)
    [trailer] = [chunk for chunk in chunks if not chunk["choices"]]
    assert {"citations", "citations_from", "sources", "retrieval", "mode", "upstream"} <= set(trailer)
    assert ModeChatCompletionChunk.model_validate(trailer).citations is not None


def test_moderated_answers_validate():
    """The self-harm template answer (and its stream) that moderation sends instead of the model's."""
    ctx = Context(mode="tutor", infos=[ModerationInfo(flagged=True, categories=["self_harm"], action="support",
                                                      direction="input")])
    body = answer_completion("You are not alone.", "stub", ctx)
    answer = ChatCompletion.model_validate(body)
    declared_only(body, ChatCompletion, "moderated answer")
    assert answer.moderation.action == "support" and answer.choices[0].finish_reason == "content_filter"

    async def collect():
        return [chunk async for chunk in completion_sse(body)]

    raw = b"".join(asyncio.run(collect())).decode()
    chunks = [json.loads(line[5:]) for line in raw.split("\n") if line.startswith("data:") and "[DONE]" not in line]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        declared_only(chunk, ChatCompletionChunk, "moderated chunk")
    assert chunks[-1]["moderation"]["categories"] == ["self_harm"]


def test_a_drifted_answer_fails():
    """The models are not so loose that anything passes."""
    good = answer_completion("Hi.", "stub", Context(mode="tutor"))
    with pytest.raises(ValueError):
        ChatCompletion.model_validate({key: value for key, value in good.items() if key != "choices"})
    with pytest.raises(ValueError):
        ModeChatCompletion.model_validate({**good, "mode": "tutor", "adapter": None, "upstream": "elsewhere"})
