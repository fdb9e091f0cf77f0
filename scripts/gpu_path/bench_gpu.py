"""GPU-path checks and figures (bench/results/gpu_path_h200.md), run on the device machine once vLLM,
llm_server --external-vllm and ai_service are up (scripts/gpu_path/run_all.sh starts them).

1. runtime LoRA updates through llm_server's control API: unload peer-v2, a chat in mode `peer`
   through ai_service must now be served by peer-v1; load peer-v2 again, the same chat must pick it.
2. tokens/s and time to first token at 1, 8 and 64 concurrent streams, base model and adapter,
   straight to vLLM and through ai_service.

    python3 scripts/gpu_path/bench_gpu.py --vllm http://127.0.0.1:8000 --key KEY --base NAME \
        --ai http://127.0.0.1:8001 --llm-server http://127.0.0.1:8010 --out $OUT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

import httpx

PROMPTS = [
    "Explain what a topic sentence does in a paragraph.",
    "How can I make my essay's conclusion stronger?",
    "What is the difference between a claim and evidence?",
    "Give me advice on transitions between paragraphs.",
]


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict, model: str, prompt: str,
                     max_tokens: int, ignore_eos: bool = True) -> tuple[int, float, float]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's extra field; ai_service's schema refuses it (random weights rarely stop)
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} {model}: HTTP {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None and '"content"' in line:
                first = time.perf_counter() - started
            if '"completion_tokens"' in line:
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens, first or 0.0, time.perf_counter() - started


async def measure(url: str, headers: dict, model: str, streams: int, per_stream: int, max_tokens: int,
                  ignore_eos: bool = True) -> dict:
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await asyncio.gather(*(one_stream(client, url, headers, model, PROMPTS[0], 8, ignore_eos)
                               for _ in range(min(streams, 8))))  # warm-up: adapter load, graphs, caches

        async def worker(i: int) -> list:
            return [await one_stream(client, url, headers, model, PROMPTS[(i + j) % len(PROMPTS)], max_tokens,
                                     ignore_eos)
                    for j in range(per_stream)]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(i) for i in range(streams))) for r in rs]
        elapsed = time.perf_counter() - started
    ttfts = sorted(r[1] for r in results)
    tokens = sum(r[0] for r in results)
    return {"model": model, "streams": streams, "requests": len(results), "tokens": tokens,
            "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 1),
            "per_stream_tokens_per_s": round(tokens / elapsed / streams, 1),
            "ttft_p50_ms": round(ttfts[len(ttfts) // 2] * 1000, 1),
            "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.95))] * 1000, 1)}


def mode_chat(client: httpx.Client, ai: str, mode: str) -> dict:
    r = client.post(f"{ai}/v1/chat", json={"mode": mode, "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "Read my intro please."}]})
    if r.status_code != 200:
        return {"status": r.status_code, "adapter": None, "error": r.text[:200]}
    body = r.json()
    return {"status": 200, "mode": body.get("mode"), "adapter": body.get("adapter"), "model": body.get("model"),
            "upstream": body.get("upstream")}


def wait_for_mode_adapter(client: httpx.Client, ai: str, want: str, timeout: float = 20.0) -> dict:
    started = time.monotonic()
    failures = []  # answers other than 200 while ai_service's model list catches up
    while True:
        got = mode_chat(client, ai, "peer")
        if got["status"] != 200:
            failures.append(got["status"])
        if got["adapter"] == want or time.monotonic() - started > timeout:
            return {**got, "seconds_to_switch": round(time.monotonic() - started, 2), "non_200_on_the_way": failures}
        time.sleep(0.25)


def lora_updates(args, log: list) -> bool:
    ok = True
    with httpx.Client(timeout=120) as client:
        ctl = {"x-tutorstack-service-token": args.llm_server_token} if args.llm_server_token else {}
        client.post(f"{args.llm_server}/v1/adapters/load", json={"name": "peer-v2"}, headers=ctl)  # idempotent
        listed = client.get(f"{args.llm_server}/v1/adapters", headers=ctl).json()
        log.append({"step": "llm_server lists adapters",
                    "adapters": [(a["name"], a["loaded"]) for a in listed["data"]],
                    "latest_loaded": listed.get("latest_loaded")})
        first = wait_for_mode_adapter(client, args.ai, "peer-v2")
        log.append({"step": "chat mode=peer (both loaded)", **first})
        ok &= first["adapter"] == "peer-v2"
        t = time.perf_counter()
        r = client.post(f"{args.llm_server}/v1/adapters/unload", json={"name": "peer-v2"}, headers=ctl)
        log.append({"step": "unload peer-v2", "status": r.status_code, "body": r.json(),
                    "ms": round((time.perf_counter() - t) * 1000, 1)})
        ok &= r.status_code == 200
        after = wait_for_mode_adapter(client, args.ai, "peer-v1")
        log.append({"step": "chat mode=peer (peer-v2 unloaded)", **after})
        ok &= after["adapter"] == "peer-v1"
        t = time.perf_counter()
        r = client.post(f"{args.llm_server}/v1/adapters/load", json={"name": "peer"}, headers=ctl)
        log.append({"step": "load family peer (newest on disk)", "status": r.status_code, "body": r.json(),
                    "ms": round((time.perf_counter() - t) * 1000, 1)})
        ok &= r.status_code == 200 and r.json().get("name") == "peer-v2"
        again = wait_for_mode_adapter(client, args.ai, "peer-v2")
        log.append({"step": "chat mode=peer (peer-v2 back)", **again})
        ok &= again["adapter"] == "peer-v2"
        models = client.get(f"{args.vllm}/v1/models", headers={"authorization": f"Bearer {args.key}"}).json()
        log.append({"step": "vLLM /v1/models", "ids": [m["id"] for m in models["data"]]})
    return bool(ok)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vllm", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--adapter", default="peer-v1")
    parser.add_argument("--ai", default="")
    parser.add_argument("--llm-server", default="")
    parser.add_argument("--llm-server-token", default="")
    parser.add_argument("--streams", default="1,8,64")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--targets", default="vllm,ai_service")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "max_tokens": args.max_tokens}

    if args.ai and args.llm_server:
        steps: list = []
        try:
            report["lora_updates_ok"] = lora_updates(args, steps)
        except Exception as exc:
            report["lora_updates_ok"] = False
            steps.append({"error": f"{type(exc).__name__}: {exc}"[:500]})
        report["lora_updates"] = steps
        for s in steps:
            print(json.dumps(s), flush=True)
        print(f"runtime LoRA updates + mode routing: {'OK' if report['lora_updates_ok'] else 'FAILED'}", flush=True)

    targets = {"vllm": (f"{args.vllm}/v1/chat/completions", {"authorization": f"Bearer {args.key}"})}
    if args.ai:
        targets["ai_service"] = (f"{args.ai}/v1/chat/completions", {"x-data-classification": "private"})
    rows = []
    for target in args.targets.split(","):
        if target not in targets:
            continue
        url, headers = targets[target]
        for model in (args.base, args.adapter):
            for streams in [int(s) for s in args.streams.split(",")]:
                per_stream = {1: 4, 8: 3}.get(streams, 2)
                try:
                    row = asyncio.run(measure(url, headers, model, streams, per_stream, args.max_tokens,
                                             ignore_eos=target == "vllm"))
                except Exception as exc:
                    row = {"model": model, "streams": streams, "error": f"{type(exc).__name__}: {exc}"[:300]}
                row["target"] = target
                rows.append(row)
                print(json.dumps(row), flush=True)
                (out / "gpu_bench.json").write_text(json.dumps({**report, "rows": rows}, indent=2))
    report["rows"] = rows
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    print(f"\n| target | model | streams | tokens/s | per stream | TTFT p50 ms | TTFT p95 ms | adapter/base |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = {(r["target"], r["streams"]): r.get("tokens_per_s") for r in rows if r["model"] == args.base}
    for r in rows:
        if "error" in r:
            print(f"| {r['target']} | {r['model']} | {r['streams']} | error: {r['error'][:80]} | | | | |")
            continue
        ratio = r["tokens_per_s"] / base[(r["target"], r["streams"])] if base.get((r["target"], r["streams"])) else 0
        print(f"| {r['target']} | {r['model']} | {r['streams']} | {r['tokens_per_s']:.0f} | "
              f"{r['per_stream_tokens_per_s']:.0f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
