"""A fast in-process OpenAI-compatible upstream for overhead benchmarks only: it answers
instantly with a fixed completion (or a fixed 16-chunk stream), so what a benchmark measures
is the platform's own overhead, not a model."""

from __future__ import annotations

import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

STREAM_CHUNKS = 16


def _completion(model: str) -> dict:
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A thesis states your claim."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


async def chat_completions(request: Request):
    body = await request.json()
    model = body.get("model", "stub")
    if not body.get("stream"):
        return JSONResponse(_completion(model))

    async def events():
        # The 16 events go out in one write: the stub's own cost (17 socket writes per request otherwise)
        # would load the shared cores and be counted as the platform's overhead. The reader still parses
        # 16 SSE events and [DONE], as from vLLM.
        pieces = []
        for i in range(STREAM_CHUNKS):
            chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
            pieces.append(f"data: {json.dumps(chunk)}\n\n")
        pieces.append("data: [DONE]\n\n")
        yield "".join(pieces)

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(_: Request):
    return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                        Route("/v1/models", models)])
