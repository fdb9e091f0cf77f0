"""POST /v1/chat/completions is served by a plain ASGI fast lane (ai_service.api.ChatCompletionsEndpoint) in
front of the FastAPI route. Whatever the request, the answer must be the one the FastAPI route alone gives:
same status, same body (errors worded by FastAPI), same headers; and the lane must really be the one
answering a valid request."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.support.processes import serve_in_thread

TOKEN = "lane-token"
GOOD = {"model": "stub", "messages": [{"role": "user", "content": "What is a thesis?"}], "max_tokens": 16}


@pytest.fixture(scope="module")
def stub_upstream():
    from bench.stub_upstream import app

    with serve_in_thread(app, lifespan="off") as url:
        yield url


def make_app(stub_upstream: str, *, fast_lane: bool):
    from ai_service.api import ChatCompletionsRoute
    from ai_service.app import create_app
    from ai_service.settings import AIServiceSettings

    settings = AIServiceSettings(app_env="test", ai_gateway_shared_token=TOKEN, ai_service_internal_token="internal",
                                 llm_base_url_local=f"{stub_upstream}/v1", llm_api_key_local="stub-key",
                                 llm_model_local="stub", graph_rag_enabled=False, safety_enabled=False)
    app = create_app(settings)
    lanes = [r for r in app.router.routes if isinstance(r, ChatCompletionsRoute)]
    assert len(lanes) == 1 and app.router.routes[0] is lanes[0]
    if not fast_lane:
        app.router.routes.remove(lanes[0])
    return app


@pytest.fixture(scope="module")
def clients(stub_upstream):
    with TestClient(make_app(stub_upstream, fast_lane=True)) as fast, \
            TestClient(make_app(stub_upstream, fast_lane=False)) as plain:
        yield fast, plain


HEADERS = {"x-tutorstack-gateway-token": TOKEN, "content-type": "application/json",
           "x-tutorstack-key-id": "k1", "x-tutorstack-key-classification": "private"}

CASES = [
    ("valid", GOOD, {}),
    ("valid, stream", {**GOOD, "stream": True}, {}),
    ("valid, charset", GOOD, {"content-type": "application/json; charset=utf-8"}),
    ("no content-type", GOOD, {"content-type": None}),
    ("text/plain", GOOD, {"content-type": "text/plain"}),
    ("not JSON", b"{not json", {}),
    ("empty body", b"", {}),
    ("a list", [GOOD], {}),
    ("a string", "hello", {}),
    ("NaN (json reads it, orjson does not)", b'{"model":"stub","messages":[{"role":"user","content":"x"}],'
                                               b'"temperature":NaN}', {}),
    ("unknown field", {**GOOD, "image_url": "http://x"}, {}),
    ("bad temperature", {**GOOD, "temperature": 7}, {}),
    ("no messages", {"model": "stub"}, {}),
    ("image part", {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, {}),
    ("bad classification", {**GOOD, "metadata": {"data_classification": 3}}, {}),
    ("lowering classification", {**GOOD, "metadata": {"data_classification": "public"}}, {}),
    ("no token", GOOD, {"x-tutorstack-gateway-token": None}),
    ("wrong token", GOOD, {"x-tutorstack-gateway-token": "nope"}),
    ("wrong token and not JSON", b"{", {"x-tutorstack-gateway-token": "nope"}),
    ("wrong token and bad field", {**GOOD, "n": 99}, {"x-tutorstack-gateway-token": "nope"}),
    ("header asks private", GOOD, {"x-data-classification": "private"}),
    ("header nonsense", GOOD, {"x-data-classification": "secret"}),
    ("non-latin model name", {**GOOD, "model": "模型"}, {}),
]


def send(client: TestClient, body, extra: dict):
    headers = {**HEADERS, **extra}
    headers = {k: v for k, v in headers.items() if v is not None}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/chat/completions", content=content, headers=headers)


def comparable(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    body = response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict):
            body.pop("created", None)
    return response.status_code, headers, body


@pytest.mark.parametrize("name,body,extra", CASES, ids=[c[0] for c in CASES])
def test_the_fast_lane_answers_as_the_fastapi_route_does(clients, name, body, extra):
    fast, plain = clients
    assert comparable(send(fast, body, extra)) == comparable(send(plain, body, extra))


def test_the_fast_lane_serves_valid_requests_itself(clients, monkeypatch):
    from ai_service import api

    fast, _ = clients
    handed_over, lane = [], []
    original_hand_over, original_call = api._hand_over, api.ChatCompletionsEndpoint.__call__

    async def spy_hand_over(*args):
        handed_over.append(1)
        await original_hand_over(*args)

    async def spy_call(self, *args):
        lane.append(1)
        await original_call(self, *args)

    monkeypatch.setattr(api, "_hand_over", spy_hand_over)
    monkeypatch.setattr(api.ChatCompletionsEndpoint, "__call__", spy_call)
    response = send(fast, GOOD, {})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert response.headers["x-tutorstack-upstream"] == "local" and response.headers["content-type"] == "application/json"
    assert lane == [1] and handed_over == []
    assert send(fast, {**GOOD, "temperature": 7}, {}).status_code == 422
    assert lane == [1, 1] and handed_over == [1]
    metrics = fast.get("/metrics").text
    assert 'route="/v1/chat/completions",service="ai_service",status="200"' in metrics
