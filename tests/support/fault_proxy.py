"""A fault-injecting HTTP proxy that tests own: it forwards to a real upstream (vLLM) and,
on command, refuses connections (killed), hangs, answers 500, or cuts a stream after its
first chunk, delays every chunk (slow but progressing), stalls after the first chunk, or
answers 401/429 as an upstream with a bad key or no quota would. Runs uvicorn in a thread on a fixed port so it can be killed and revived."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODES = ("pass", "hang", "error500", "error401", "error429", "cut_after_first_chunk", "slow",
         "stall_after_first_chunk", "script")


class FaultProxy:
    def __init__(self, target: str, port: int):
        self.target = target.rstrip("/")
        self.port = port
        self.mode = "pass"
        self.requests_seen = 0  # chat completions only: readiness probes (GET /models) poll on their own clock
        self.chunk_delay = 0.5  # seconds between chunks in "slow" mode
        self.script = ""  # the answer streamed in "script" mode, word by word, instead of asking the upstream
        self.last_body: dict | None = None  # the last JSON request body seen
        self.bodies_seen: list[bytes] = []  # every request body, to count what reached this tier
        self.script_tool_call: dict | None = None  # in "script" mode: answer the next request with this call, once
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, chunk_delay: float | None = None, script: str | None = None,
                 tool_call: dict | None = None) -> None:
        assert mode in MODES, mode
        self.mode = mode
        if script is not None:
            self.script = script
        self.script_tool_call = tool_call
        if chunk_delay is not None:
            self.chunk_delay = chunk_delay

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("fault proxy did not start")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """Stop listening: clients get a real connection refused."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def revive(self) -> None:
        if self._server is None:
            self.start()

    # --- forwarding ------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        if request.url.path.endswith("/chat/completions"):
            self.requests_seen += 1
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode.startswith("error"):
            status = int(mode[5:])
            return JSONResponse({"error": {"message": f"injected {status}", "type": "injected",
                                           "param": None, "code": None}}, status_code=status)
        body = await request.body()
        self.bodies_seen.append(body)
        try:
            self.last_body = json.loads(body) if body else None
        except ValueError:
            self.last_body = None
        if mode == "script" and request.url.path.endswith("/chat/completions"):
            return StreamingResponse(self._scripted(), media_type="text/event-stream")
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        client = httpx.AsyncClient(timeout=120)
        upstream = await client.send(
            client.build_request(request.method, self.target + request.url.path, content=body, headers=headers),
            stream=True,
        )

        async def relay():
            try:
                first = True
                async for chunk in upstream.aiter_raw():
                    if mode == "slow" and not first:
                        await asyncio.sleep(self.chunk_delay)
                    yield chunk
                    if mode == "cut_after_first_chunk" and first:
                        await asyncio.sleep(0.05)
                        raise ConnectionAbortedError("injected: stream cut after the first chunk")
                    if mode == "stall_after_first_chunk" and first:
                        await asyncio.sleep(3600)
                    first = False
            finally:
                await upstream.aclose()
                await client.aclose()

        content_type = upstream.headers.get("content-type", "application/json")
        return StreamingResponse(relay(), status_code=upstream.status_code, media_type=content_type)

    async def _scripted(self):
        model = (self.last_body or {}).get("model", "scripted")
        if self.script_tool_call is not None:
            call, self.script_tool_call = self.script_tool_call, None
            delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_scripted", "type": "function",
                                                          "function": call}]}
            for event in ({"index": 0, "delta": delta, "finish_reason": None},
                          {"index": 0, "delta": {}, "finish_reason": "tool_calls"}):
                yield ("data: " + json.dumps({"id": "scripted", "object": "chat.completion.chunk", "created": 0,
                                              "model": model, "choices": [event]}) + "\n\n").encode()
            yield b"data: [DONE]\n\n"
            return
        words = self.script.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            yield ("data: " + json.dumps({"id": "scripted", "object": "chat.completion.chunk", "created": 0,
                                          "model": model, "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": None}]}) + "\n\n").encode()
        yield ("data: " + json.dumps({"id": "scripted", "object": "chat.completion.chunk", "created": 0, "model": model,
                                      "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n").encode()
        yield b"data: [DONE]\n\n"
