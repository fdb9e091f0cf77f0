"""The gateway serves the committed public OpenAPI document (docs/openapi.json) at /openapi.json when docs are
exposed, kept to its allow-list, and the skeleton of the public routes when the file is absent or unreadable.
No Redis or ai_service is needed: the docs routes never look up a key."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app, skeleton_openapi
from gateway.routes import PUBLIC_ROUTES
from gateway.settings import DEFAULT_OPENAPI_PATH, GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_FILE = ROOT / "docs" / "openapi.json"


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    """Log records of gateway.app (its own handler: create_app reconfigures the root logger's)."""
    handler, logger = Records(), logging.getLogger("gateway.app")
    logger.addHandler(handler)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield handler.records
    logger.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def served(**env) -> tuple[int, dict | None]:
    settings = GatewaySettings(_env_file=None, APP_ENV="dev", GATEWAY_KEY_SIGNING_SECRET="x", LOG_LEVEL="INFO",
                               REDIS_URL="redis://127.0.0.1:1/0", AI_SERVICE_URL="http://127.0.0.1:1", **env)
    client = TestClient(create_app(settings))  # no lifespan: nothing connects
    response = client.get("/openapi.json")
    docs = client.get("/docs")
    assert docs.status_code == response.status_code
    return response.status_code, response.json() if response.status_code == 200 else None


def test_the_default_path_is_the_committed_document_of_this_checkout(monkeypatch):
    monkeypatch.delenv("GATEWAY_OPENAPI_PATH", raising=False)
    assert DEFAULT_OPENAPI_PATH == OPENAPI_FILE
    assert GatewaySettings(_env_file=None, GATEWAY_KEY_SIGNING_SECRET="x").openapi_path == OPENAPI_FILE
    assert GatewaySettings(_env_file=None, GATEWAY_KEY_SIGNING_SECRET="x", GATEWAY_OPENAPI_PATH="").openapi_path \
        == OPENAPI_FILE


def test_exposed_docs_serve_the_committed_document(records, monkeypatch):
    monkeypatch.delenv("GATEWAY_OPENAPI_PATH", raising=False)
    status, document = served(GATEWAY_EXPOSE_DOCS="true")
    assert status == 200
    assert document == json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    analyze = document["paths"]["/v1/writing/analyze"]["post"]
    assert analyze["requestBody"]["content"]["application/json"]["schema"] != {"type": "object"}
    assert any(str(OPENAPI_FILE) in r.getMessage() and r.levelno == logging.INFO for r in records)
    assert served()[0] == 404  # off by default


def test_absent_file_serves_the_skeleton_and_says_so(records, tmp_path):
    status, document = served(GATEWAY_EXPOSE_DOCS="true", GATEWAY_OPENAPI_PATH=str(tmp_path / "none.json"))
    assert status == 200 and document == skeleton_openapi()
    assert document["paths"]["/v1/writing/analyze"]["post"]["requestBody"]["content"]["application/json"][
        "schema"] == {"type": "object"}
    assert any("skeleton" in r.getMessage() and r.levelno == logging.WARNING for r in records)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    status, document = served(GATEWAY_EXPOSE_DOCS="true", GATEWAY_OPENAPI_PATH=str(tmp_path / "bad.json"))
    assert status == 200 and document == skeleton_openapi()
    assert any("unreadable" in r.getMessage() and r.levelno == logging.ERROR for r in records)


def test_a_stale_file_is_kept_to_the_allow_list(records, tmp_path):
    """A route the file lacks is served from the skeleton (with a warning); one the gateway no longer lists is
    not published."""
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    del document["paths"]["/v1/intents"]
    document["paths"]["/v1/internal/only"] = {"get": {"summary": "not public", "responses": {}}}
    (tmp_path / "stale.json").write_text(json.dumps(document), encoding="utf-8")
    status, served_document = served(GATEWAY_EXPOSE_DOCS="true", GATEWAY_OPENAPI_PATH=str(tmp_path / "stale.json"))
    assert status == 200
    assert set(served_document["paths"]) == {route.path for route in PUBLIC_ROUTES}
    assert served_document["paths"]["/v1/intents"] == skeleton_openapi()["paths"]["/v1/intents"]
    assert served_document["paths"]["/v1/writing/analyze"] == document["paths"]["/v1/writing/analyze"]
    assert any("POST /v1/intents" in r.getMessage() and r.levelno == logging.WARNING for r in records)
