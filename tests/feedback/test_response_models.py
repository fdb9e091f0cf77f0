"""The feedback service's answers validate against the models its OpenAPI schema declares
(services/feedback/schemas.py), so they cannot drift from the code: the feedback app in-process (real Redis,
real SQLite) in front of the real llm_server app (its adapter routes, over httpx's ASGI transport) with a fake
vLLM that keeps the loaded adapters. /v1/me and /v1/ab/{mode}/{action} go through a real response_model whose
models forbid extra fields (a field the route adds but the model lacks is a 500 here, never silently dropped);
the /v1/adapters routes pass llm_server's JSON on as it is and declare their models for documentation only."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter

from llm_server.vllm_client import VllmClient
from services.feedback.schemas import ABActionResult, ABPromoted, ABRolledBack, AdapterActionResult, AdapterList, Me

TOKEN = "fb-models-token"
LLM_TOKEN = "llm-models-token"
BASE = "base-model"


def headers(role="student", key="key-1", user: str | None = "alice", classification="private"):
    out = {"x-tutorstack-service-token": TOKEN, "x-tutorstack-key-id": key, "x-tutorstack-role": role,
           "x-tutorstack-key-classification": classification}
    return {**out, "x-tutorstack-user-id": user} if user else out


class FakeVllm(VllmClient):
    """vLLM's model list (the base model, and each loaded LoRA with its parent) and its load/unload calls;
    llm_server's own VllmClient.loaded_adapters reads the list."""

    def __init__(self, loaded: dict[str, str]):
        self.loaded = dict(loaded)

    async def models(self) -> list[dict]:
        return [{"id": BASE, "object": "model", "root": f"/models/{BASE}", "parent": None},
                *({"id": name, "object": "model", "root": path, "parent": BASE} for name, path in self.loaded.items())]

    async def load_adapter(self, name: str, path: str) -> None:
        self.loaded[name] = path

    async def unload_adapter(self, name: str) -> None:
        self.loaded.pop(name)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def client(tmp_path, redis_url, monkeypatch):
    from llm_server.app import create_app as create_llm_server
    from llm_server.settings import LLMServerSettings
    from services.feedback.app import create_app
    from services.feedback.settings import FeedbackSettings

    monkeypatch.setenv("APP_ENV", "test")
    adapters = tmp_path / "adapters"
    for name in ("peer-v1", "peer-v2", "peer-v3"):
        (adapters / name).mkdir(parents=True)
        (adapters / name / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": BASE}))
    vllm = FakeVllm({name: str(adapters / name) for name in ("peer-v1", "peer-v2")})
    llm_server = create_llm_server(LLMServerSettings(_env_file=None, LLM_ADAPTERS_DIR=str(adapters),
                                                     LLM_SERVER_API_TOKEN=LLM_TOKEN, LLM_SERVED_MODEL_NAME=BASE,
                                                     LLM_API_KEY_LOCAL="a-secret-of-our-own"), vllm=vllm)
    app = create_app(FeedbackSettings(
        _env_file=None, FEEDBACK_API_TOKEN=TOKEN, FEEDBACK_DB_PATH=str(tmp_path / "fb.db"), REDIS_URL=redis_url,
        LLM_ADAPTERS_DIR=str(adapters), LLM_SERVER_API_TOKEN=LLM_TOKEN,
        FEEDBACK_AB_KEY_PREFIX=f"tutorstack:test:{tmp_path.name}:ab:"))
    app.state.feedback.llm = httpx.AsyncClient(transport=httpx.ASGITransport(app=llm_server), base_url="http://llm")
    with TestClient(app) as test_client:
        test_client.vllm = vllm
        yield test_client


def validated(response, model, where: str):
    assert response.status_code == 200, f"{where}: {response.status_code} {response.text}"
    body = response.json()
    adapter = TypeAdapter(model)
    value = adapter.validate_python(body)
    assert adapter.dump_python(value, mode="json", exclude_unset=True) == body, (
        f"{where}: the model would change the answer")
    return value


def declared_only(body: dict, model: type[BaseModel], where: str) -> None:
    """The models of llm_server's answers allow extra fields; still, every field there is today is declared."""
    assert set(body) <= set(model.model_fields), f"{where}: undeclared {sorted(set(body) - set(model.model_fields))}"


def test_me(client):
    me = validated(client.get("/v1/me", headers=headers(role="teacher")), Me, "/v1/me")
    assert (me.key_id, me.role, me.user_id, me.key_classification) == ("key-1", "teacher", "alice", "private")
    anonymous = validated(client.get("/v1/me", headers=headers(user=None, classification="public")), Me, "/v1/me")
    assert anonymous.user_id is None and anonymous.key_classification == "public"


def test_adapters_list_load_and_unload(client):
    listing = client.get("/v1/adapters", headers=headers(role="teacher"))
    parsed = validated(listing, AdapterList, "GET /v1/adapters")
    declared_only(listing.json(), AdapterList, "GET /v1/adapters")
    for row in listing.json()["data"]:
        declared_only(row, AdapterList.model_fields["data"].annotation.__args__[0], "an adapter row")
    assert {(row.name, row.loaded, row.rank) for row in parsed.data} == {
        ("peer-v1", True, 8), ("peer-v2", True, 8), ("peer-v3", False, 8)}
    assert parsed.base_model == BASE and parsed.latest_loaded == {"peer": "peer-v2"}

    admin = headers(role="admin")
    loaded = client.post("/v1/adapters/load", json={"name": "peer-v3"}, headers=admin)
    assert validated(loaded, AdapterActionResult, "load").changed is True
    declared_only(loaded.json(), AdapterActionResult, "load")
    again = validated(client.post("/v1/adapters/load", json={"name": "peer-v3"}, headers=admin),
                      AdapterActionResult, "load again")
    assert again.changed is False and again.path
    unloaded = client.post("/v1/adapters/unload", json={"name": "peer-v1"}, headers=admin)
    assert validated(unloaded, AdapterActionResult, "unload").loaded is False
    declared_only(unloaded.json(), AdapterActionResult, "unload")
    assert set(client.vllm.loaded) == {"peer-v2", "peer-v3"}


def test_ab_promote_and_rollback(client):
    admin = headers(role="admin")
    client.post("/v1/adapters/load", json={"name": "peer-v3"}, headers=admin)
    split = client.put("/v1/ab/peer", json={"candidate": "peer-v3", "percent": 50}, headers=admin)
    assert split.status_code == 200, split.text
    promoted = validated(client.post("/v1/ab/peer/promote", headers=admin), ABActionResult, "promote")
    assert isinstance(promoted, ABPromoted)
    assert (promoted.now_serving, promoted.unloaded) == ("peer-v3", "peer-v2")

    rolled = validated(client.post("/v1/ab/peer/rollback", headers=admin), ABActionResult, "rollback")
    assert isinstance(rolled, ABRolledBack)
    assert (rolled.removed, rolled.unloaded, rolled.now_serving) == ("peer-v3", True, "peer-v1")
    assert rolled.moved_to and "adapters-retired" in rolled.moved_to
