"""A stand-in for llama.cpp's llama-server that answers with what it was asked: the `lora` field it got,
so tests can check the proxy's model-name -> LoRA translation without the real (slow to build) binary.
Accepts llama-server's command line; serves /health, /metrics and the two completion routes."""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--alias")
    parser.add_argument("--lora", action="append", default=[])
    args, _ = parser.parse_known_args(argv)
    app = FastAPI()

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {args.api_key}"

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request):
        return PlainTextResponse(f"llamacpp:requests_processing 0\nfake_loras {len(args.lora)}\n")

    async def complete(request: Request):
        if not authorized(request):
            return JSONResponse({"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}},
                                status_code=401)
        body = await request.json()
        content = json.dumps({"lora": body.get("lora"), "loras_held": args.lora})
        if body.get("stream"):
            async def events():
                for piece in (content[: len(content) // 2], content[len(content) // 2:]):
                    chunk = {"object": "chat.completion.chunk", "model": args.alias,
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"object": "chat.completion", "model": args.alias,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}], "usage": {"completion_tokens": 1, "prompt_tokens": 1}}

    app.add_api_route("/v1/chat/completions", complete, methods=["POST"])
    app.add_api_route("/v1/completions", complete, methods=["POST"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    if "--version" in sys.argv:
        print("fake llama-server")
        sys.exit(0)
    main(sys.argv[1:])
