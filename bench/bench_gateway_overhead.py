"""Gateway + ai_service overhead versus calling the upstream directly.

A fast stub upstream answers instantly, so the difference is the platform's own cost:
auth (Redis), rate limit (Redis), request ids, routing, two extra HTTP hops.
Measures requests/s and p50/p99 latency (non-streamed) and time to first token (streamed)
at 1, 16 and 64 concurrent clients, and prints a table with ratios.

    python bench/bench_gateway_overhead.py [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import Process, free_port, start_redis, wait_healthy  # noqa: E402
from tests.support.stack import start_platform  # noqa: E402

BODY = {"model": "stub", "messages": [{"role": "user", "content": "What is a thesis?"}], "max_tokens": 16}


async def run_load(url: str, headers: dict, concurrency: int, total: int, stream: bool) -> dict:
    latencies: list[float] = []
    errors = 0
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker():
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    if stream:
                        async with client.stream("POST", url, json={**BODY, "stream": True}, headers=headers) as resp:
                            first = None
                            async for _ in resp.aiter_raw():
                                if first is None:
                                    first = time.perf_counter() - started  # time to first token
                            ok = resp.status_code == 200
                        latencies.append(first or 0.0)
                    else:
                        resp = await client.post(url, json=BODY, headers=headers)
                        ok = resp.status_code == 200
                        latencies.append(time.perf_counter() - started)
                    errors += 0 if ok else 1
                except httpx.HTTPError:
                    errors += 1

        # warm-up: connections and caches
        await asyncio.gather(*(client.post(url, json=BODY, headers=headers) for _ in range(min(concurrency, 8))))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="requests per cell")
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    procs: list[Process] = []
    try:
        redis_proc, redis_url = start_redis(workdir)
        procs.append(redis_proc)
        stub_port = free_port()
        stub = Process("stub", [sys.executable, "-m", "uvicorn", "bench.stub_upstream:app", "--port", str(stub_port),
                                "--log-level", "warning", "--no-access-log"], dict(os.environ), workdir)
        procs.append(stub)
        wait_healthy(f"http://127.0.0.1:{stub_port}/v1/models", stub, 30)
        platform = start_platform(workdir, redis_url, local_url=f"http://127.0.0.1:{stub_port}", local_api_key="stub",
                                  ai_env={"LLM_MODEL_LOCAL": "stub", "LOG_LEVEL": "WARNING"},
                                  gateway_env={"LOG_LEVEL": "WARNING"})
        procs.extend(platform.processes.values())
        key = platform.create_key("bench", rpm=10_000_000)
        direct = (f"http://127.0.0.1:{stub_port}/v1/chat/completions", {})
        through_platform = (f"{platform.gateway_url}/v1/chat/completions", {"authorization": f"Bearer {key}"})

        rows = []
        for stream in (False, True):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                d = asyncio.run(run_load(*direct, concurrency, args.requests, stream))
                p = asyncio.run(run_load(*through_platform, concurrency, args.requests, stream))
                rows.append((stream, concurrency, d, p))
        metric = {False: "latency", True: "TTFT"}
        print(f"\nGateway + ai_service overhead vs direct upstream ({args.requests} requests per cell, "
              f"{os.cpu_count()} CPU cores, load generator on the same machine)\n")
        print(f"| mode | clients | direct req/s | platform req/s | req/s ratio | direct p50 ms | platform p50 ms "
              f"| added p50 ms | direct p99 ms | platform p99 ms | added p99 ms | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for stream, c, d, p in rows:
            print(f"| {'stream ' + metric[stream] if stream else 'non-stream ' + metric[stream]} | {c} | {d['rps']:.0f} "
                  f"| {p['rps']:.0f} | {p['rps'] / d['rps']:.2f} | {d['p50']:.1f} | {p['p50']:.1f} "
                  f"| {p['p50'] - d['p50']:+.1f} | {d['p99']:.1f} | {p['p99']:.1f} | {p['p99'] - d['p99']:+.1f} "
                  f"| {d['errors'] + p['errors']} |")
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    main()
