"""The public OpenAPI document (docs/openapi.json) and the writing analysis JSON Schema (docs/schemas/): fresh
against the services' code, complete for the gateway's allow-list, true to what the services answer, and served
by the gateway. scripts/build_public_openapi.py builds them; here it runs in-process (a few seconds)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gateway.routes import PUBLIC_ROUTES

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_FILE = ROOT / "docs" / "openapi.json"
WRITING_SCHEMA_FILE = ROOT / "docs" / "schemas" / "writing-analyze-response.json"
REFRESH = "run `make openapi` (python scripts/build_public_openapi.py) and commit docs/openapi.json and docs/schemas/"
# The chat routes that may stream (stream=true): their 200 documents text/event-stream too.
STREAMING = {("POST", "/v1/chat/completions"), ("POST", "/v1/chat"), ("POST", "/v1/chat/hybrid")}


def load_script():
    spec = importlib.util.spec_from_file_location("build_public_openapi", ROOT / "scripts" / "build_public_openapi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def build(script):
    return script.assemble()


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))


def resolve(schema: dict, components: dict, prefix: str = "#/components/schemas/") -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = components[schema["$ref"][len(prefix):]]
    return schema


def nontrivial(schema: dict, components: dict, depth: int = 0) -> bool:
    """A schema that says something about fields: an object with properties, an array of such, or a union
    with one such member; `{}` and `{"type": "object"}` are not."""
    schema = resolve(schema, components)
    if depth > 5 or not isinstance(schema, dict):
        return False
    if schema.get("properties"):
        return True
    if schema.get("type") == "array" and "items" in schema:
        return nontrivial(schema["items"], components, depth + 1)
    return any(nontrivial(member, components, depth + 1)
               for key in ("anyOf", "oneOf", "allOf") for member in schema.get(key, []))


def api_routes(routes, prefix: str = ""):
    """(path, APIRoute) of an app's routes, into included routers (FastAPI 0.165 keeps those as one entry
    holding the original router and the include's prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif getattr(route, "original_router", None) is not None:
            context = getattr(route, "include_context", None)
            yield from api_routes(route.original_router.routes, prefix + getattr(context, "prefix", ""))


def declares_model(annotation) -> bool:
    """A response_model that is (or holds, as in `A | B` or `list[A]`) a pydantic model; `dict` is not one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(declares_model(arg) for arg in typing.get_args(annotation))


def declared_200_model(route: APIRoute):
    """The 200 model a route declares: its response_model, else (documentation only, no run-time validation,
    as on ai_service's chat routes) `responses={200: {"model": ...}}`."""
    if declares_model(route.response_model):
        return route.response_model
    return (route.responses.get(200) or route.responses.get("200") or {}).get("model")


def answers_html(route: APIRoute) -> bool:
    response_class = getattr(route.response_class, "value", route.response_class)  # FastAPI's DefaultPlaceholder
    return isinstance(response_class, type) and issubclass(response_class, HTMLResponse)


def service_route(app, path: str, method: str) -> APIRoute:
    [route] = [r for p, r in api_routes(app.routes) if p == path and method in r.methods and r.include_in_schema]
    return route


def test_committed_files_are_fresh(script, build):
    files = script.files_of(build)
    assert set(files) == {OPENAPI_FILE, WRITING_SCHEMA_FILE}
    for path, text in files.items():
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: {REFRESH}"
        assert path.read_text(encoding="utf-8") == text, f"{path.relative_to(ROOT)} is stale: {REFRESH}"


def test_the_build_is_deterministic(script, build):
    again = script.files_of(script.assemble())
    assert again == script.files_of(build)
    text = again[OPENAPI_FILE]
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_check_mode_reports_stale_files_and_writing_refreshes_them(script, build, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "OPENAPI_FILE", tmp_path / "openapi.json")
    monkeypatch.setattr(script, "SCHEMA_DIR", tmp_path / "schemas")
    monkeypatch.setattr(script, "assemble", lambda: build)
    assert script.main(["--check"]) == 1  # absent
    assert "stale" in capsys.readouterr().out and not (tmp_path / "openapi.json").exists()
    assert script.main([]) == 0 and script.main(["--check"]) == 0
    assert (tmp_path / "schemas" / "writing-analyze-response.json").exists()
    text = (tmp_path / "openapi.json").read_text(encoding="utf-8")
    (tmp_path / "openapi.json").write_text(text.replace('"scores"', '"points"'), encoding="utf-8")
    assert script.main(["--check"]) == 1
    assert "openapi.json" in capsys.readouterr().out


def test_every_public_route_is_documented_with_the_services_schemas(build, committed):
    components = committed["components"]["schemas"]
    for route in PUBLIC_ROUTES:
        for method in route.methods:
            label = f"{method} {route.path}"
            operation = committed["paths"].get(route.path, {}).get(method.lower())
            assert operation is not None, f"{label} is not in docs/openapi.json: {REFRESH}"
            assert operation["summary"] == route.summary and operation["security"] == [{"apiKey": []}]
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, label
            assert not operation.get("x-tutorstack-unserved"), (
                f"{label}: no service serves it: remove it from gateway/routes.py or serve it")
            service = build.serving[(route.path, method)]
            served = service_route(build.apps[service], route.path, method)
            takes_json = served.body_field is not None or "requestBody" in (served.openapi_extra or {})
            if takes_json:
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert nontrivial(body, components), f"{label}: request body schema is trivial: {body}"
            else:
                assert "requestBody" not in operation, f"{label}: {service} reads no body"
            content = operation["responses"]["200"]["content"]
            if answers_html(served):  # a page, not JSON
                assert set(content) == {"text/html"} and content["text/html"]["schema"]["type"] == "string", label
            else:
                assert declares_model(declared_200_model(served)), (
                    f"{label}: {service} declares no pydantic model for its 200 answer (response_model, or "
                    "responses={200: {'model': ...}} where the route returns a Response as it is)")
                answer = content["application/json"]["schema"]
                assert nontrivial(answer, components), f"{label}: 200 schema is trivial: {answer}"
                if (method, route.path) in STREAMING:
                    stream = content["text/event-stream"]
                    assert stream["schema"]["type"] == "string" and "[DONE]" in stream["schema"]["description"]
                    assert "choices" in stream["x-tutorstack-event-schema"]["properties"], label
                else:
                    assert set(content) == {"application/json"}, label
            path_params = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert path_params == {part[1:-1] for part in route.path.split("/") if part.startswith("{")}, label
            assert not any(p["name"].lower().startswith("x-tutorstack-") for p in operation["parameters"]), label
    assert set(committed["paths"]) == {route.path for route in PUBLIC_ROUTES}


def test_the_documented_fields_reach_the_public_document(committed):
    """What the issue asks for: the writing analysis (scores, issues, citations) and the guided turn (guidance)
    with their fields; the query parameters of a delegated GET; every reference resolves."""
    components = committed["components"]["schemas"]

    def answer(method, path):
        schema = committed["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        return resolve(schema, components)

    analysis = answer("post", "/v1/writing/analyze")
    assert {"scores", "issues", "overall", "metrics", "feedback", "model"} <= set(analysis["properties"])
    assert "citations" in resolve(analysis["properties"]["metrics"], components)["properties"]
    assert "guidance" in answer("post", "/v1/chat/guided")["properties"]
    for path in ("/v1/chat", "/v1/chat/hybrid"):  # the fields ai_service adds to a mode's chat.completion
        assert {"choices", "citations", "citations_from", "sources", "retrieval", "mode", "adapter", "upstream",
                "ab_variant", "moderation"} <= set(answer("post", path)["properties"]), path
    assert "moderation" in answer("post", "/v1/chat/completions")["properties"]
    assert {"object", "data"} <= set(answer("get", "/v1/models")["properties"])
    assert {"key_id", "role", "user_id", "key_classification"} <= set(answer("get", "/v1/me")["properties"])
    event = committed["paths"]["/v1/chat/hybrid"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    assert {"citations", "citations_from", "moderation"} <= set(event["x-tutorstack-event-schema"]["properties"])
    anchors = committed["paths"]["/v1/writing/anchors"]["get"]
    assert {("course_id", "query"), ("assignment_id", "query")} <= {(p["name"], p["in"]) for p in anchors["parameters"]}
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(committed)
    assert refs and all(ref.startswith("#/components/schemas/") and ref.split("/")[-1] in components for ref in refs)
    assert "HTTPValidationError" not in components  # FastAPI's 422 never reaches a client: OpenAI-shaped errors
    ids = [op["operationId"] for ops in committed["paths"].values() for op in ops.values() if "operationId" in op]
    assert len(ids) == len(set(ids))


def test_colliding_component_names_are_kept_apart(script):
    shared = {"type": "object", "properties": {"a": {"type": "string"}}}
    used = {
        "writing": {"Feedback": {"type": "object", "properties": {"summary": {"type": "string"}}},
                    "Scale": shared, "Score": {"type": "object", "properties": {"s": {"$ref": "#/components/schemas/Scale"}}}},
        "practice": {"Feedback": {"type": "object", "properties": {"turns": {"type": "array"}}},
                     "Scale": {"type": "object", "properties": {"b": {"type": "integer"}}},
                     "Score": {"type": "object", "properties": {"s": {"$ref": "#/components/schemas/Scale"}}}},
        "guided": {"Scale": shared},
    }
    merged, rename = script.merge_components(used)
    assert rename["writing"]["Feedback"] == "WritingFeedback" and rename["practice"]["Feedback"] == "PracticeFeedback"
    # Score reads the same in both but refers to different Scales: two components, each to its own Scale
    assert rename["writing"]["Score"] != rename["practice"]["Score"]
    assert merged[rename["practice"]["Score"]]["properties"]["s"]["$ref"] == "#/components/schemas/PracticeScale"
    assert rename["guided"]["Scale"] == rename["writing"]["Scale"] == "WritingScale"  # identical: shared
    assert set(merged) == {"WritingFeedback", "PracticeFeedback", "WritingScale", "PracticeScale",
                           "WritingScore", "PracticeScore"}


def test_writing_schema_file_matches_the_model_and_a_real_answer(committed):
    """docs/schemas/writing-analyze-response.json has every model and field of services/writing/schemas.py's
    AnalyzeResponse, and a real analysis (the writing app in-process, Redis and the LLM down: the degraded
    answer still has the one schema) validates against it and against the OpenAPI document's 200 schema."""
    from services.writing.app import create_app
    from services.writing.schemas import AnalyzeResponse
    from services.writing.settings import WritingSettings

    schema = json.loads(WRITING_SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    model = AnalyzeResponse.model_json_schema(mode="serialization")
    assert set(schema["$defs"]) == set(model["$defs"])
    assert set(schema["properties"]) == set(model["properties"]) and set(schema["required"]) == set(model["required"])
    for name, definition in model["$defs"].items():
        assert set(schema["$defs"][name].get("properties", {})) == set(definition.get("properties", {})), name

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        app = create_app(WritingSettings(_env_file=None, app_env="dev", log_level="WARNING",
                                         REDIS_URL="redis://127.0.0.1:1/0", AI_SERVICE_URL="http://127.0.0.1:1"))
        with TestClient(app) as client:
            response = client.post("/v1/writing/analyze", content=(ROOT / "services/writing/sample_request.json")
                                   .read_bytes(), headers={"content-type": "application/json",
                                                           "x-tutorstack-key-id": "k", "x-tutorstack-role": "student"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert response.status_code == 200, response.text
    answer = response.json()
    jsonschema.Draft202012Validator(schema).validate(answer)
    openapi_schema = {**committed["paths"]["/v1/writing/analyze"]["post"]["responses"]["200"]["content"][
        "application/json"]["schema"], "components": committed["components"]}
    jsonschema.Draft202012Validator(openapi_schema).validate(answer)
    broken = {key: value for key, value in answer.items() if key != "scores"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_the_document_is_valid_openapi_3_1(committed):
    """Against the OpenAPI 3.1 meta-schema (the one schemathesis ships) and as schemathesis loads it."""
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    import schemathesis

    jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate(committed)
    operations = [result.ok() for result in schemathesis.openapi.from_dict(committed).get_all_operations()]
    assert len(operations) == sum(len(route.methods) for route in PUBLIC_ROUTES)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate({**committed, "paths": {"/x": {"get": {
            "responses": {"200": {}}}}}})
