"""The feedback service's routes against a fake ai_service and llm_server (real Redis, real SQLite)."""

import httpx
import pytest
from fastapi.testclient import TestClient

from services.feedback.app import create_app
from services.feedback.settings import FeedbackSettings

TOKEN = "fb-test-token"


def headers(role="student", key="key-1", user="alice"):
    return {"x-tutorstack-service-token": TOKEN, "x-tutorstack-key-id": key, "x-tutorstack-role": role,
            "x-tutorstack-user-id": user, "x-tutorstack-key-classification": "private"}


class FakeLLMServer:
    def __init__(self, loaded):
        self.loaded = set(loaded)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/adapters":
            return httpx.Response(200, json={"object": "list", "data": [{"name": n, "loaded": True}
                                                                         for n in sorted(self.loaded)]})
        name = __import__("json").loads(request.content)["name"]
        if request.url.path == "/v1/adapters/load":
            self.loaded.add(name)
            return httpx.Response(200, json={"name": name, "loaded": True})
        if request.url.path == "/v1/adapters/unload":
            if name not in self.loaded:
                return httpx.Response(404, json={"error": {"message": "not loaded", "code": "adapter_not_loaded"}})
            self.loaded.discard(name)
            return httpx.Response(200, json={"name": name, "loaded": False})
        return httpx.Response(404)


def fake_ai(request: httpx.Request) -> httpx.Response:
    body = __import__("json").loads(request.content)
    assert request.headers["x-data-classification"] == "private"
    return httpx.Response(200, json={"id": "chatcmpl-1", "choices": [
        {"message": {"role": "assistant", "content": f"answer from {body['model'] or 'base'}"}}]})


@pytest.fixture
def client(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("APP_ENV", "test")
    adapters = tmp_path / "adapters"
    (adapters / "peer-v2").mkdir(parents=True)
    settings = FeedbackSettings(FEEDBACK_API_TOKEN=TOKEN, FEEDBACK_DB_PATH=str(tmp_path / "fb.db"),
                                REDIS_URL=redis_url, LLM_ADAPTERS_DIR=str(adapters),
                                FEEDBACK_AB_KEY_PREFIX=f"tutorstack:test:{tmp_path.name}:ab:")
    app = create_app(settings)
    llm = FakeLLMServer({"peer-v1", "peer-v2"})
    fb = app.state.feedback
    fb.ai = httpx.AsyncClient(transport=httpx.MockTransport(fake_ai), base_url="http://ai")
    fb.llm = httpx.AsyncClient(transport=httpx.MockTransport(llm), base_url="http://llm")
    with TestClient(app) as c:
        c.llm = llm
        c.adapters = adapters
        yield c


def test_needs_the_service_token(client):
    assert client.get("/v1/leaderboard").status_code == 401
    assert client.get("/v1/leaderboard", headers={**headers(), "x-tutorstack-service-token": "wrong"}).status_code == 401


def test_arena_hides_models_then_vote_reveals_and_is_idempotent(client):
    seen_orders = set()
    for _ in range(12):
        r = client.post("/v1/arena", json={"mode": "peer", "prompt": "Is my thesis okay?"}, headers=headers())
        assert r.status_code == 200, r.text
        body = r.json()
        assert "model_a" not in body and set(body) == {"id", "mode", "prompt", "a", "b"}
        seen_orders.add(body["a"]["content"])
    assert seen_orders == {"answer from peer-v1", "answer from peer-v2"}  # the order is random
    vote = client.post("/v1/feedback", json={"arena_id": body["id"], "vote": "a", "comment": "clearer"},
                       headers=headers())
    assert vote.status_code == 200 and vote.json()["duplicate"] is False
    stored = vote.json()["vote"]
    assert stored["model_a"] in ("peer-v1", "peer-v2") and stored["answer_a"] == body["a"]["content"]
    assert stored["prompt"] == "Is my thesis okay?" and stored["user_id"] == "alice" and stored["mode"] == "peer"
    retry = client.post("/v1/feedback", json={"arena_id": body["id"], "vote": "a"}, headers=headers())
    assert retry.json()["duplicate"] is True and retry.json()["vote"]["id"] == stored["id"]
    # another key cannot vote on alice's round
    other = client.post("/v1/feedback", json={"arena_id": body["id"], "vote": "b"}, headers=headers(key="key-2"))
    assert other.status_code == 404


def test_thumbs_and_teacher_view(client):
    r = client.post("/v1/feedback", json={"response_id": "chatcmpl-9", "vote": "down", "comment": "too long",
                                          "prompt": "p", "answer": "x", "mode": "peer"}, headers=headers())
    assert r.status_code == 200 and r.json()["vote"]["kind"] == "thumbs"
    assert client.post("/v1/feedback", json={"vote": "up"}, headers=headers()).status_code == 400
    assert client.get("/v1/feedback", headers=headers()).status_code == 403
    listing = client.get("/v1/feedback?with_comment=true", headers=headers(role="teacher"))
    assert [v["comment"] for v in listing.json()["data"]] == ["too long"]


def test_leaderboard_changes_with_votes(client):
    assert client.get("/v1/leaderboard", headers=headers()).json() == {"modes": []}
    for _ in range(6):
        body = client.post("/v1/arena", json={"prompt": "Hi", "mode": "peer"}, headers=headers()).json()
        winner = "a" if body["a"]["content"].endswith("peer-v2") else "b"
        client.post("/v1/feedback", json={"arena_id": body["id"], "vote": winner}, headers=headers())
    board = client.get("/v1/leaderboard?mode=peer", headers=headers()).json()["modes"][0]
    assert board["votes"] == 6 and [r["model"] for r in board["ratings"]] == ["peer-v2", "peer-v1"]
    top = board["ratings"][0]
    assert top["ci_low"] < top["rating"] < top["ci_high"] and top["wins"] == 6


def test_ab_split_promote_and_rollback(client):
    assert client.get("/v1/ab/peer", headers=headers()).json()["active"] is False
    assert client.put("/v1/ab/peer", json={"candidate": "peer-v2", "percent": 10},
                      headers=headers()).status_code == 403  # students cannot
    r = client.put("/v1/ab/peer", json={"candidate": "peer-v2", "percent": 10}, headers=headers(role="admin"))
    assert r.status_code == 200, r.text
    split = r.json()
    assert split["control"] == "peer-v1" and split["candidate"] == "peer-v2" and split["percent"] == 10
    assert client.put("/v1/ab/peer", json={"candidate": "peer-v9"}, headers=headers(role="admin")).status_code == 409
    # the arena compares the split's two arms
    body = client.post("/v1/arena", json={"prompt": "Hi"}, headers=headers()).json()
    assert {body["a"]["content"], body["b"]["content"]} == {"answer from peer-v1", "answer from peer-v2"}
    metrics = client.get("/metrics").text
    assert 'tutorstack_ab_percent{candidate="peer-v2",control="peer-v1",mode="peer"} 10.0' in metrics

    rolled = client.post("/v1/ab/peer/rollback", headers=headers(role="admin")).json()
    assert rolled["removed"] == "peer-v2" and rolled["now_serving"] == "peer-v1"
    assert client.llm.loaded == {"peer-v1"} and not (client.adapters / "peer-v2").exists()
    assert client.get("/v1/ab/peer", headers=headers()).json()["active"] is False

    client.post("/v1/adapters/load", json={"name": "peer-v3"}, headers=headers(role="admin"))
    client.put("/v1/ab/peer", json={"candidate": "peer-v3", "percent": 50}, headers=headers(role="admin"))
    promoted = client.post("/v1/ab/peer/promote", headers=headers(role="admin")).json()
    assert promoted["now_serving"] == "peer-v3" and promoted["unloaded"] == "peer-v1"
    assert client.llm.loaded == {"peer-v3"}
    assert client.post("/v1/ab/peer/promote", headers=headers(role="admin")).status_code == 409


def test_adapter_ops_are_admin_only(client):
    assert client.get("/v1/adapters", headers=headers()).status_code == 403
    assert client.get("/v1/adapters", headers=headers(role="teacher")).status_code == 200
    assert client.post("/v1/adapters/unload", json={"name": "peer-v1"}, headers=headers(role="teacher")).status_code == 403
    assert client.post("/v1/adapters/unload", json={"name": "peer-v1"}, headers=headers(role="admin")).status_code == 200
    assert client.llm.loaded == {"peer-v2"}
