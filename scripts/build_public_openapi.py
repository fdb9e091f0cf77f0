#!/usr/bin/env python
"""Builds the public API's OpenAPI document (`docs/openapi.json`) from the services' own schemas.

The gateway (:8080) is the only public face, but it only forwards: the request and response models live in
ai_service and in the services behind it, which the gateway may not import (services talk HTTP). This script
is not a service, so it builds every service that serves a public route (`create_app`, APP_ENV=dev settings,
no `.env`, none of their variables from the environment), reads each one's OpenAPI schema, and for every
(method, path) of `gateway/routes.py` PUBLIC_ROUTES takes the operation that finally answers it: ai_service's
own, or the service's that ai_service delegates it to (`ai_service/service_routes.py` DELEGATED_ROUTES).
Kept from that operation: its description, operationId, path/query/header parameters (the internal
`x-tutorstack-*` headers aside), request body and 2xx responses, with the component schemas they reach;
added: the gateway's summary, bearer auth and its OpenAI-shaped `Error` for every error status (FastAPI's
422 `HTTPValidationError` never reaches a client: common.app answers it as an OpenAI error). Components
with one name but different content in two services are renamed with the service's name (`WritingFeedback`,
`PracticeFeedback`); identical ones are shared.

It also writes JSON Schemas (draft 2020-12) of single bodies to `docs/schemas/` (the writing analysis
response, issue 8), taken from the same document.

    python scripts/build_public_openapi.py          # (re)write docs/openapi.json and docs/schemas/*.json
    python scripts/build_public_openapi.py --check  # exit 1 if a committed file differs from a fresh build

`make openapi` runs the first; tests/gateway/test_public_openapi.py fails when the committed files are stale.
The gateway serves docs/openapi.json at /openapi.json and /docs when GATEWAY_EXPOSE_DOCS=true.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib
import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OPENAPI_FILE = REPO / "docs" / "openapi.json"
SCHEMA_DIR = REPO / "docs" / "schemas"
# JSON Schemas published on their own: file name -> (method, public path, status) of the response they describe.
JSON_SCHEMAS: dict[str, tuple[str, str, str]] = {
    "writing-analyze-response.json": ("POST", "/v1/writing/analyze", "200"),
}
AI_SERVICE = "ai_service"
REF_PREFIX = "#/components/schemas/"
INTERNAL_HEADERS = ("x-tutorstack-", "authorization")  # the gateway sets these; clients never send them
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


# --- the services ---------------------------------------------------------------------------------------

def _settings_class(module_name: str):
    """The pydantic-settings class a service's settings module defines (a ServiceSettings subclass)."""
    from common.settings import ServiceSettings

    module = importlib.import_module(module_name)
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, ServiceSettings) and cls is not ServiceSettings and cls.__module__ == module_name]
    if len(found) != 1:
        raise SystemExit(f"{module_name}: expected one ServiceSettings subclass, found {[c.__name__ for c in found]}")
    return found[0]


def service_modules(service: str) -> tuple[str, str]:
    """(app module, settings module) of a service named as in DELEGATED_ROUTES or ai_service."""
    package = service if service == AI_SERVICE else f"services.{service}"
    return f"{package}.app", f"{package}.settings"


def serving_service(path: str, method: str) -> str:
    """The service whose operation answers a public (path, method) in the end."""
    from ai_service.service_routes import DELEGATED_ROUTES

    for delegated_path, methods, service in DELEGATED_ROUTES:
        if "/v1" + delegated_path == path and method in methods:
            return service
    return AI_SERVICE


def _env_names(settings_cls) -> set[str]:
    names = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        choices = getattr(alias, "choices", None)
        if alias is None:
            names.add(name.upper())
        elif isinstance(alias, str):
            names.add(alias)
        elif choices:
            names.update(c for c in choices if isinstance(c, str))
    return names


@contextlib.contextmanager
def _quiet_clean_process(settings_classes: list) -> Iterator[None]:
    """While the apps are built: the repository as working directory, none of the settings' variables in the
    environment (the document must not depend on who builds it), the process's logging left as it was."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = set().union(*(_env_names(cls) for cls in settings_classes))
    try:
        for name in list(os.environ):
            if name.upper() in names:
                del os.environ[name]
        os.chdir(REPO)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def build_apps(services: list[str]) -> dict[str, Any]:
    """Each service's FastAPI app, as `python -m <service>` would build it with APP_ENV=dev and no .env."""
    classes = {service: _settings_class(service_modules(service)[1]) for service in services}
    apps = {}
    with _quiet_clean_process(list(classes.values())):
        for service in services:
            settings = classes[service](_env_file=None, app_env="dev", log_level="WARNING")
            apps[service] = importlib.import_module(service_modules(service)[0]).create_app(settings)
    return apps


# --- references and component merging ------------------------------------------------------------------

def refs_in(node: Any) -> Iterator[str]:
    """Names of the component schemas a node refers to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref[len(REF_PREFIX):]
        for value in node.values():
            yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def rewrite_refs(node: Any, rename: dict[str, str], prefix: str = REF_PREFIX) -> Any:
    """A copy of node with every component reference renamed (and re-prefixed)."""
    if isinstance(node, dict):
        out = {key: rewrite_refs(value, rename, prefix) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            out["$ref"] = prefix + rename[ref[len(REF_PREFIX):]]
        return out
    if isinstance(node, list):
        return [rewrite_refs(value, rename, prefix) for value in node]
    return node


def closure(names: set[str], components: dict[str, dict], where: str) -> dict[str, dict]:
    """The components reachable from names (a reference to a missing component is an error)."""
    seen: dict[str, dict] = {}
    todo = sorted(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in components:
            raise SystemExit(f"{where}: reference to #/components/schemas/{name}, which its schema does not define")
        seen[name] = components[name]
        todo.extend(sorted(set(refs_in(components[name])) - set(seen)))
    return seen


def _canonical(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def service_prefix(service: str) -> str:
    return "".join(part.capitalize() for part in service.split("_"))


def merge_components(used: dict[str, dict[str, dict]]) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """One components table for schemas that come from several services.

    used: service -> {component name: schema}. Two components are the same when their content is the same and
    what they refer to is the same, transitively (partition refinement to a fixed point). A name whose variants
    differ gets the service's prefix on each variant (the first service, in `used` order, that has it).
    Returns (merged components, service -> {original name: public name})."""
    keys = [(service, name) for service in used for name in used[service]]
    ids = {key: hashlib.sha256(_canonical(rewrite_refs(used[key[0]][key[1]], {n: "" for n in used[key[0]]}))
                               .encode()).hexdigest() for key in keys}
    while True:
        refined = {(service, name): hashlib.sha256(_canonical(rewrite_refs(
            used[service][name], {n: ids[(service, n)] for n in used[service]})).encode()).hexdigest()
            for service, name in keys}
        if len(set(refined.values())) == len(set(ids.values())):
            break
        ids = refined
    ids = refined
    by_name: dict[str, list[tuple[str, str]]] = {}  # name -> [(variant id, first service)]
    for service, name in keys:
        variants = by_name.setdefault(name, [])
        if ids[(service, name)] not in (v for v, _ in variants):
            variants.append((ids[(service, name)], service))
    public_name: dict[tuple[str, str], str] = {}  # (name, variant id) -> public name
    for name, variants in by_name.items():
        for variant, first in variants:
            public_name[(name, variant)] = name if len(variants) == 1 else service_prefix(first) + name
    taken = [n for n in public_name.values()]
    clashes = sorted({n for n in taken if taken.count(n) > 1})
    if clashes:
        raise SystemExit(f"component names clash after renaming: {clashes}")
    rename = {service: {name: public_name[(name, ids[(service, name)])] for name in used[service]} for service in used}
    merged = {}
    for service, name in keys:
        merged.setdefault(rename[service][name], rewrite_refs(used[service][name], rename[service]))
    return merged, rename


# --- operations -----------------------------------------------------------------------------------------

def public_operation(route, method: str, service: str, operation: dict) -> dict:
    """The public form of a service's operation (references still the service's names)."""
    from gateway.app import ERROR_STATUSES, error_response, skeleton_operation

    out: dict[str, Any] = {"summary": route.summary, "tags": [service], "security": [{"apiKey": []}]}
    for key in ("description", "operationId"):
        if operation.get(key):
            out[key] = operation[key]
    parameters = [copy.deepcopy(p) for p in operation.get("parameters", [])
                  if not (p.get("in") == "header" and p.get("name", "").lower().startswith(INTERNAL_HEADERS))]
    declared = {p["name"] for p in parameters if p.get("in") == "path"}
    parameters += [p for p in skeleton_operation(route, method)["parameters"] if p["name"] not in declared]
    out["parameters"] = parameters
    if "requestBody" in operation:
        out["requestBody"] = copy.deepcopy(operation["requestBody"])
    responses: dict[str, Any] = {}
    for status, response in operation.get("responses", {}).items():
        if status.startswith("2"):
            responses[status] = copy.deepcopy(response)
        elif not (status == "422" and response.get("description") == "Validation Error"):  # FastAPI's default
            responses[status] = error_response(response.get("description") or "OpenAI-shaped error")
    for status, text in ERROR_STATUSES.items():
        responses.setdefault(str(status), error_response(text))
    out["responses"] = responses
    return out


@dataclass
class Build:
    document: dict  # the public OpenAPI document
    apps: dict[str, Any]  # service -> its FastAPI app
    schemas: dict[str, dict]  # service -> its own OpenAPI schema
    serving: dict[tuple[str, str], str]  # (public path, method) -> the service that answers it


def build_document() -> dict:
    """The public OpenAPI document (a dict), built in this process."""
    return assemble().document


def assemble() -> Build:
    """Builds the services' apps and from their schemas the public document."""
    from gateway.app import skeleton_openapi
    from gateway.routes import PUBLIC_ROUTES

    serving = {(route.path, method): serving_service(route.path, method)
               for route in PUBLIC_ROUTES for method in route.methods}
    services = [AI_SERVICE] + sorted(set(serving.values()) - {AI_SERVICE})
    apps = build_apps(services)
    schemas = {service: app.openapi() for service, app in apps.items()}

    operations: dict[str, list[tuple[str, str, dict]]] = {service: [] for service in services}  # path, method, op
    for route in PUBLIC_ROUTES:
        for method in route.methods:
            service = serving[(route.path, method)]
            served = schemas[service].get("paths", {}).get(route.path, {})
            operation = served.get(method.lower())
            if operation is None:  # a route the gateway publishes but nothing serves: fix routes.py or serve it
                raise SystemExit(f"{method} {route.path}: in PUBLIC_ROUTES, but {service}'s OpenAPI schema lacks it "
                                 f"(it serves {', '.join(m.upper() for m in sorted(served)) or 'nothing'} there; "
                                 "include_in_schema=False, or a different path?)")
            operations[service].append((route.path, method, public_operation(route, method, service, operation)))

    used = {}
    for service in services:
        components = schemas[service].get("components", {}).get("schemas", {})
        if "Error" in components:
            raise SystemExit(f"{service} defines a component named Error, the name of the gateway's error schema")
        names = {name for _, _, op in operations[service] for name in refs_in(op)} - {"Error"}
        used[service] = closure(names, components, service)
    merged, rename = merge_components(used)

    document = skeleton_openapi()
    document["components"]["schemas"].update(merged)
    document["info"]["description"] += (
        " Request and response bodies are those of the service that answers each route. Generated by "
        "`scripts/build_public_openapi.py` (`make openapi`) from the services' own schemas; do not edit by hand.")
    paths: dict[str, dict] = {}
    operation_ids: dict[str, str] = {}
    for service in services:
        for path, method, op in operations[service]:
            op = rewrite_refs(op, {**rename[service], "Error": "Error"})
            op_id = op.get("operationId")
            if op_id in operation_ids:  # unique across the document: qualify a repeated one
                op["operationId"] = op_id = f"{service}_{op_id}"
            if op_id:
                operation_ids[op_id] = path
            paths.setdefault(path, {})[method.lower()] = op
    document["paths"] = paths
    return Build(document, apps, schemas, serving)


def json_schema_of(document: dict, method: str, path: str, status: str) -> dict:
    """A standalone JSON Schema (draft 2020-12, `$defs`) of one operation's JSON response, from the OpenAPI
    schema of the service that serves it (so with that service's own component names)."""
    schema = document["paths"][path][method.lower()]["responses"][status]["content"]["application/json"]["schema"]
    components = document["components"]["schemas"]
    defs = closure(set(refs_in(schema)), components, f"{method} {path}")
    identity = {name: name for name in components}
    root_name = schema.get("$ref", "")[len(REF_PREFIX):] if set(schema) == {"$ref"} else None
    root = copy.deepcopy(components[root_name]) if root_name else copy.deepcopy(schema)
    if root_name and root_name not in set().union(*(set(refs_in(d)) for d in defs.values())):
        defs.pop(root_name)  # the root itself, unless something refers back to it
    out = {"$schema": JSON_SCHEMA_DIALECT,
           "$comment": f"The {status} body of {method} {path} (public API). Generated by "
                       "scripts/build_public_openapi.py from the service's pydantic models; do not edit by hand.",
           **rewrite_refs(root, identity, "#/$defs/")}
    if defs:
        out["$defs"] = {name: rewrite_refs(d, identity, "#/$defs/") for name, d in defs.items()}
    return out


def render(node: Any) -> str:
    return json.dumps(node, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_files() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    return files_of(assemble())


def files_of(build: Build) -> dict[Path, str]:
    files = {OPENAPI_FILE: render(build.document)}
    for name, (method, path, status) in JSON_SCHEMAS.items():
        service = build.serving[(path, method)]
        files[SCHEMA_DIR / name] = render(json_schema_of(build.schemas[service], method, path, status))
    return files


def stale_files(files: dict[Path, str]) -> list[Path]:
    return [path for path, text in files.items()
            if not path.exists() or path.read_text(encoding="utf-8") != text]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale; write nothing")
    args = parser.parse_args(argv)
    files = build_files()
    stale = stale_files(files)
    if args.check:
        for path in stale:
            print(f"stale: {_shown(path)} (run `make openapi` or `python scripts/build_public_openapi.py`)")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path in stale:
            path.write_text(text, encoding="utf-8")
        print(f"{'wrote' if path in stale else 'unchanged'}: {_shown(path)}")
    document = json.loads(files[OPENAPI_FILE])
    count = sum(len(ops) for ops in document["paths"].values())
    print(f"{count} operations on {len(document['paths'])} paths, {len(document['components']['schemas'])} schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
