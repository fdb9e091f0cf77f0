"""OpenAI-shaped errors where FastAPI or an upstream would answer in its own words: a body that is not UTF-8,
a path or method that does not exist, and vLLM's exception-class error types."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from pydantic import BaseModel

from ai_service.upstreams import _json_or_error
from common.app import create_service_app
from common.settings import ServiceSettings


class Body(BaseModel):
    text: str


def client() -> TestClient:
    app = create_service_app("errors-test", ServiceSettings(), configure_logs=False)

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return {"text": body.text}

    return TestClient(app)


def test_a_body_that_is_not_utf8_is_invalid_json_like_any_other_bad_body():
    with client() as http:
        answer = http.post("/echo", content=b'{"text": "\xff\xfe"}', headers={"content-type": "application/json"})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_json"
        assert "UTF-8" in answer.json()["error"]["message"]
        bad_json = http.post("/echo", content=b'{"text":', headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
        assert http.post("/echo", json={"text": "ok"}).json() == {"text": "ok"}


def test_unknown_paths_and_methods_have_codes():
    with client() as http:
        missing = http.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == {"message": "Not Found", "type": "not_found_error", "param": None,
                                           "code": "not_found"}
        wrong = http.delete("/echo")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_vllm_error_types_become_openai_ones():
    vllm = b'{"error": {"message": "The model `gpt-9` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}}'
    assert _json_or_error(404, vllm) == {"error": {"message": "The model `gpt-9` does not exist.",
                                                   "type": "not_found_error", "param": "model",
                                                   "code": "model_not_found"}}
    bad = b'{"error": {"message": "max_tokens is too large", "type": "BadRequestError", "param": null, "code": 400}}'
    assert _json_or_error(400, bad)["error"] == {"message": "max_tokens is too large", "type": "invalid_request_error",
                                                 "param": None, "code": None}


def test_an_openai_shaped_upstream_error_passes_unchanged():
    cloud = {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": None,
             "code": "insufficient_quota"}
    assert _json_or_error(429, json.dumps({"error": cloud}).encode()) == {"error": cloud}
    assert _json_or_error(502, b"<html>bad gateway</html>")["error"]["type"] == "upstream_error"


def test_every_status_the_services_raise_has_a_client_error_type():
    """A 4xx is never typed server_error (a 409 from the feedback service once was)."""
    from common.errors import OpenAIError

    for status in (400, 401, 403, 404, 405, 409, 413, 422, 429):
        assert OpenAIError(status, "x").type != "server_error", status
