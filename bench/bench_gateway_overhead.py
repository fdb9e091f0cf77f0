"""Gateway + ai_service overhead versus calling the upstream directly, and LiteLLM's proxy beside them.

A fast stub upstream answers instantly, so the difference is the platform's own cost: path check,
API key + rate limit (one Redis round trip), request ids, routing, two extra HTTP hops.
Measures requests/s and p50/p99 latency (non-streamed) and time to first byte of the stream
(streamed) at 1, 16 and 64 concurrent clients, for three targets in one run:
the stub directly, tutorstack (gateway -> ai_service -> stub), and LiteLLM's proxy (one worker,
master key, -> stub) when its virtualenv exists ($TUTORSTACK_HOME/venv-litellm; skipped with a
message otherwise; `--setup-litellm` creates it with pip install 'litellm[proxy]').

The load generator is a small raw-socket HTTP/1.1 keep-alive client on uvloop (no httpx), so it
takes as little of the machine's CPU as possible.

    python bench/bench_gateway_overhead.py [--requests 2000] [--gateway-workers 1]
    python bench/bench_gateway_overhead.py --soak 60       # 64 clients for 60 s: errors and RSS start/end
    python bench/bench_gateway_overhead.py --profile       # py-spy on gateway and ai_service at 16 clients
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import Process, free_port, start_redis, wait_healthy  # noqa: E402
from tests.support.stack import start_platform, tutorstack_home  # noqa: E402

BODY = b'{"model":"stub","messages":[{"role":"user","content":"What is a thesis?"}],"max_tokens":16}'
STREAM_BODY = BODY[:-1] + b',"stream":true}'
RESULTS = Path(__file__).resolve().parent / "results"


# --- load generator ------------------------------------------------------------------------------

def _request_bytes(host: str, port: int, path: str, headers: dict, body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    """One keep-alive HTTP/1.1 connection; reads a response framed by content-length or chunked."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, float]:
        """Send; returns (status, seconds to the first body byte) after reading the whole response."""
        if self.writer is None:
            await self.open()
        started = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        first = None
        if b"content-length:" in lowered:
            length = int(lowered.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await self.reader.readexactly(length)
            first = time.perf_counter() - started
        else:  # chunked
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if first is None:
                    first = time.perf_counter() - started
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if b"connection: close" in lowered:
            self.writer.close()
            self.writer = None
        return status, first


async def run_load(port: int, path: str, headers: dict, concurrency: int, *, total: int = 0, duration: float = 0,
                   stream: bool = False) -> dict:
    raw = _request_bytes("127.0.0.1", port, path, headers, STREAM_BODY if stream else BODY)
    latencies: list[float] = []
    firsts: list[float] = []
    statuses: collections.Counter = collections.Counter()
    errors = 0
    remaining = total
    deadline = time.perf_counter() + duration if duration else None
    conns = [Conn("127.0.0.1", port) for _ in range(concurrency)]
    for conn in conns:  # warm-up: connections and caches
        await conn.request(raw)

    async def worker(conn: Conn):
        nonlocal remaining, errors
        while (remaining > 0) if deadline is None else (time.perf_counter() < deadline):
            remaining -= 1
            started = time.perf_counter()
            try:
                status, first = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn.writer = None
                continue
            latencies.append(time.perf_counter() - started)
            firsts.append(first)
            statuses[status] += 1
            errors += 0 if status == 200 else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        if conn.writer is not None:
            conn.writer.close()
    measured = sorted(firsts if stream else latencies) or [0.0]
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(measured) * 1000,
            "p99": measured[min(len(measured) - 1, int(len(measured) * 0.99))] * 1000, "errors": errors,
            "n": len(latencies), "statuses": dict(statuses)}


def load(*args, **kwargs) -> dict:
    try:
        import uvloop
        return uvloop.run(run_load(*args, **kwargs))
    except ImportError:
        return asyncio.run(run_load(*args, **kwargs))


# --- LiteLLM ---------------------------------------------------------------------------------------

def litellm_venv() -> Path:
    return tutorstack_home() / "venv-litellm"


def setup_litellm() -> None:
    venv = litellm_venv()
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)


def start_litellm(workdir: Path, stub_url: str) -> tuple[Process, int, str] | None:
    litellm = litellm_venv() / "bin" / "litellm"
    if not litellm.exists():
        print(f"LiteLLM skipped: {litellm} not found (python bench/bench_gateway_overhead.py --setup-litellm)")
        return None
    port, master = free_port(), "sk-bench-master"
    config = workdir / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: stub
    litellm_params: {{model: openai/stub, api_base: "{stub_url}/v1", api_key: stub}}
general_settings: {{master_key: {master}}}
litellm_settings: {{set_verbose: false, telemetry: false}}
""")
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    env.pop("DATABASE_URL", None)
    proc = Process("litellm", [str(litellm), "--config", str(config), "--port", str(port), "--host", "127.0.0.1",
                               "--num_workers", "1"], env, workdir)
    wait_healthy(f"http://127.0.0.1:{port}/health/liveliness", proc, 180)
    return proc, port, master


# --- processes and profiles -----------------------------------------------------------------------

def rss_mb(proc: Process) -> float:
    import psutil

    root = psutil.Process(proc.popen.pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def cpu_seconds(procs: list[Process]) -> float:
    """User + system CPU time of these processes and their children (uvicorn workers) so far."""
    import psutil

    total = 0.0
    for proc in procs:
        try:
            root = psutil.Process(proc.popen.pid)
            for p in [root, *root.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _frame_parts(frame: str) -> tuple[str, str]:
    """('func (pkg/file.py)', 'pkg') from py-spy's 'func (pkg/file.py:123)'."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({path})", path.split("/", 1)[0] if "/" in path else path


def profile_top(raw_file: Path, top: int = 15, own_packages=("gateway", "ai_service", "common")) -> list[str]:
    """From py-spy's collapsed stacks: self samples by function and by package, and inclusive samples of
    the project's own functions (line numbers merged)."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    by_package: collections.Counter = collections.Counter()
    total = 0
    for line in raw_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_parts(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        for func in {f for f, pkg in frames if pkg in own_packages}:
            inclusive[func] += n
        own[frames[-1][0]] += n
        by_package[frames[-1][1]] += n
    total = max(total, 1)
    out = [f"  samples: {total}", "  self, by function (top):"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["  self, by package (the event loop's C code and syscalls count as asyncio):"]
    out += [f"    {100 * n / total:5.1f}%  {p}" for p, n in by_package.most_common(10)]
    out += [f"  inclusive, the project's own functions ({', '.join(own_packages)}):"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return out


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("py-spy not installed (pip install py-spy): no profile")
        return None
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
                             "--format", "raw", "--subprocesses", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_cell(per_process: list[float]) -> str:
    if not per_process:
        return ""
    total = f"{sum(per_process):.2f}"
    return total if len(per_process) == 1 else f"{total} ({' + '.join(f'{c:.2f}' for c in per_process)})"


# --- main -------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--gateway-workers", type=int, default=1, help="GATEWAY_WORKERS for the gateway")
    parser.add_argument("--ai-workers", type=int, default=1, help="AI_SERVICE_WORKERS for ai_service")
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed rows")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--setup-litellm", action="store_true", help="create the LiteLLM virtualenv, then exit")
    parser.add_argument("--soak", type=float, default=0, help="only a soak: 64 clients for this many seconds")
    parser.add_argument("--profile", action="store_true", help="only profile gateway and ai_service at 16 clients")
    parser.add_argument("--profile-target", default="tutorstack", choices=["tutorstack", "gateway only"])
    parser.add_argument("--profile-clients", type=int, default=16)
    parser.add_argument("--output", default="gateway_overhead", help="bench/results/<output>.md")
    parser.add_argument("--safety", choices=["off", "on"], default="off",
                        help="ai_service's moderation (SAFETY_ENABLED): off measures the edge itself; on adds "
                             "the input and output checks (classifiers, embeddings) to every chat")
    args = parser.parse_args()
    if args.setup_litellm:
        setup_litellm()
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    procs: list[Process] = []
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        redis_proc, redis_url = start_redis(workdir)
        procs.append(redis_proc)
        stub_port = free_port()
        stub = Process("stub", [sys.executable, "-m", "uvicorn", "bench.stub_upstream:app", "--port", str(stub_port),
                                "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
                       dict(os.environ), workdir)
        procs.append(stub)
        wait_healthy(f"http://127.0.0.1:{stub_port}/v1/models", stub, 30)
        platform = start_platform(workdir, redis_url, local_url=f"http://127.0.0.1:{stub_port}", local_api_key="stub",
                                  ai_env={"LLM_MODEL_LOCAL": "stub", "LOG_LEVEL": "WARNING",
                                          "SAFETY_ENABLED": "true" if args.safety == "on" else "false",
                                          "AI_SERVICE_WORKERS": str(args.ai_workers)},
                                  gateway_env={"LOG_LEVEL": "WARNING", "GATEWAY_WORKERS": str(args.gateway_workers)})
        procs.extend(platform.processes.values())
        key = platform.create_key("bench", rpm=10_000_000)
        gateway_port = int(platform.gateway_url.rsplit(":", 1)[1])
        # The gateway alone in front of the stub (AI_SERVICE_URL = the stub): its share of the two hops.
        alone_port = free_port()
        alone = Process("gateway-alone", [sys.executable, "-m", "gateway", "serve"],
                        {**platform.gateway_env, "GATEWAY_PORT": str(alone_port),
                         "AI_SERVICE_URL": f"http://127.0.0.1:{stub_port}"}, workdir)
        procs.append(alone)
        wait_healthy(f"http://127.0.0.1:{alone_port}/healthz", alone, 60)
        path = "/v1/chat/completions"
        bearer = {"Authorization": f"Bearer {key}"}
        targets = {"direct": (stub_port, path, {}),
                   "gateway only": (alone_port, path, bearer),
                   "tutorstack": (gateway_port, path, bearer)}
        cores = os.cpu_count()
        machine = (f"{cores} CPU cores, load generator on the same machine, gateway workers {args.gateway_workers}, "
                   f"ai_service workers {args.ai_workers}, "
                   f"moderation {args.safety}, load average at start {os.getloadavg()[0]:.1f}")

        if args.profile:
            seconds = 20
            pids = {"gateway": platform.processes["gateway"].popen.pid,
                    "ai_service": platform.processes["ai_service"].popen.pid}
            if args.profile_target == "gateway only":
                pids = {"gateway": alone.popen.pid}
            spies = {name: (py_spy(pid, seconds, workdir / f"{name}.txt"), workdir / f"{name}.txt")
                     for name, pid in pids.items()}
            time.sleep(1)
            result = load(*targets[args.profile_target], args.profile_clients, duration=seconds - 2)
            for spy, _ in spies.values():
                if spy:
                    spy.wait(timeout=60)
            say(f"## Profile of {args.profile_target} at {args.profile_clients} clients, {seconds - 2} s ({machine})\n")
            say(f"{args.profile_target}: {result['rps']:.0f} req/s, p50 {result['p50']:.1f} ms, errors {result['errors']}\n")
            for name, (spy, out) in spies.items():
                if spy and out.exists():
                    say(f"### {name} (py-spy, 250 Hz)\n```")
                    for line in profile_top(out):
                        say(line)
                    say("```")
            (RESULTS / f"{args.output}_profile.md").write_text("\n".join(lines) + "\n")
            return

        if args.soak:
            say(f"## Soak: 64 clients for {args.soak:.0f} s per target ({machine})\n")
            say("RSS (whole process tree) before any load, after a 5 s warm-up at 64 clients, and at the end.\n")
            say("| target | requests | req/s | p50 ms | p99 ms | p99/p50 | errors | statuses "
                "| gateway RSS MB: cold / warm -> end | ai_service RSS MB: cold / warm -> end |")
            say("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
            watched = {"gateway only": {"gateway": alone},
                       "tutorstack": {"gateway": platform.processes["gateway"],
                                      "ai_service": platform.processes["ai_service"]}}
            for target in ("gateway only", "tutorstack"):
                procs_of = watched[target]
                cold = {name: rss_mb(p) for name, p in procs_of.items()}
                load(*targets[target], 64, duration=5)
                warm = {name: rss_mb(p) for name, p in procs_of.items()}
                result = load(*targets[target], 64, duration=args.soak)
                end = {name: rss_mb(p) for name, p in procs_of.items()}
                cells = [f"{cold[n]:.0f} / {warm[n]:.0f} -> {end[n]:.0f}" if n in procs_of else "-"
                         for n in ("gateway", "ai_service")]
                say(f"| {target} | {result['n']} | {result['rps']:.0f} | {result['p50']:.1f} | {result['p99']:.1f} "
                    f"| {result['p99'] / max(result['p50'], 1e-9):.1f} | {result['errors']} | {result['statuses']} "
                    f"| {cells[0]} | {cells[1]} |")
            say(f"\nload average at the end {os.getloadavg()[0]:.1f}")
            (RESULTS / f"{args.output}_soak.md").write_text("\n".join(lines) + "\n")
            return

        # The CPU time the serving processes spend per request: unlike latency and req/s, it hardly moves
        # when other jobs load the machine, so it is the figure to compare between runs.
        served_by = {"gateway only": [alone], "tutorstack": [platform.processes["gateway"],
                                                             platform.processes["ai_service"]]}
        if not args.no_litellm:
            started = start_litellm(workdir, f"http://127.0.0.1:{stub_port}")
            if started:
                lite_proc, lite_port, master = started
                procs.append(lite_proc)
                targets["litellm"] = (lite_port, path, {"Authorization": f"Bearer {master}"})
                served_by["litellm"] = [lite_proc]
        rows = []
        for stream in ((False,) if args.no_stream else (False, True)):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                cell = {}
                for name, (port, path, headers) in targets.items():
                    total = args.requests if name != "litellm" else min(args.requests, 600)
                    serving = served_by.get(name, [])
                    before = [cpu_seconds([p]) for p in serving]
                    cell[name] = load(port, path, headers, concurrency, total=total, stream=stream)
                    # per request (+ the warm-up request per connection), per serving process
                    cell[name]["cpu_ms"] = [(cpu_seconds([p]) - b) * 1000 / max(cell[name]["n"] + concurrency, 1)
                                            for p, b in zip(serving, before)]
                rows.append((stream, concurrency, cell))
        say("targets: direct = the stub; gateway only = gateway -> stub; tutorstack = gateway -> ai_service -> stub; "
            "litellm = LiteLLM proxy (1 worker, master key) -> stub.\n")
        say(f"## Gateway + ai_service overhead vs the stub upstream ({args.requests} requests per cell, "
            f"LiteLLM {min(args.requests, 600)}; {machine})\n")
        say("p50/p99: latency (non-stream) or time to the first body byte (stream); added = target - direct; "
            "CPU ms/req: user+system CPU of the serving processes (gateway, + ai_service for tutorstack, LiteLLM's "
            "proxy) per request, which other load on the machine hardly moves; for tutorstack: total (gateway + "
            "ai_service).\n")
        say("| mode | clients | target | req/s | p50 ms | added p50 ms | p99 ms | added p99 ms | p99/p50 | errors "
            "| CPU ms/req |")
        say("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for stream, c, cell in rows:
            d = cell["direct"]
            for name, r in cell.items():
                added50 = "" if name == "direct" else f"{r['p50'] - d['p50']:+.2f}"
                added99 = "" if name == "direct" else f"{r['p99'] - d['p99']:+.2f}"
                say(f"| {'stream' if stream else 'non-stream'} | {c} | {name} | {r['rps']:.0f} | {r['p50']:.2f} "
                    f"| {added50} | {r['p99']:.2f} | {added99} | {r['p99'] / max(r['p50'], 1e-9):.1f} "
                    f"| {r['errors']} | {_cpu_cell(r.get('cpu_ms', []))} |")
        say(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        (RESULTS / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    main()
