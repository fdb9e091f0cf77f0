"""ai_service forwards a chat request's `rerank` to graphrag's /v1/retrieve (and documents it)."""

import asyncio
import json

import httpx

from ai_service.api import HybridChatRequest, ModeChatRequest
from ai_service.rag import RERANK, retrieve


def _recording_client(seen: list[dict]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"object": "list", "data": []})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_retrieve_sends_rerank_only_when_the_request_chose():
    seen: list[dict] = []

    async def go():
        async with _recording_client(seen) as client:
            await retrieve(client, "http://graphrag", "thesis", 3, "hybrid")
            await retrieve(client, "http://graphrag", "thesis", 3, "hybrid", rerank=True)
            await retrieve(client, "http://graphrag", "thesis", 3, "hybrid", rerank=False)
            token = RERANK.set(True)  # what the /v1/chat routes do with the body's `rerank`
            try:
                await retrieve(client, "http://graphrag", "thesis", 3, "hybrid")
            finally:
                RERANK.reset(token)
            await retrieve(client, "http://graphrag", "thesis", 3, "hybrid")

    asyncio.run(go())
    assert ["rerank" in body for body in seen] == [False, True, True, True, False]
    assert [body.get("rerank") for body in seen] == [None, True, False, True, None]


def test_chat_request_models_document_rerank():
    for model in (ModeChatRequest, HybridChatRequest):
        field = model.model_json_schema()["properties"]["rerank"]
        assert "cross-encoder" in field["description"]
    assert HybridChatRequest(messages=[{"role": "user", "content": "hi"}], rerank=True).rerank is True
    assert HybridChatRequest(messages=[{"role": "user", "content": "hi"}]).rerank is None
