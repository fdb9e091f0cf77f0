"""`python -m llm_server serve`: launch vLLM as a child process and run the control API.

The child runs in vLLM's own virtualenv (VLLM_PYTHON) in a session of its own, so stopping it
stops its engine-core workers too. Its output is relayed line by line with a `[vllm]` prefix.
With `--external-vllm URL` nothing is launched: the control API manages a vLLM that runs
elsewhere (the GPU container in compose) and loads the adapters on disk into it once it is up.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from common.logging import configure_logging, get_logger
from llm_server.adapters import AdapterOnDisk, discover_adapters
from llm_server.device import Capabilities, EngineConfig, ModelFacts, detect, engine_config
from llm_server.settings import LLMServerSettings
from llm_server.vllm_client import VllmClient

log = get_logger("llm_server.serve")

# Our settings that share vLLM's env prefix: vLLM reads VLLM_PORT as its internal RPC port,
# so these must not reach the child.
OWN_VLLM_VARIABLES = ("VLLM_PORT", "VLLM_HOST", "VLLM_PYTHON", "VLLM_EXTRA_ARGS", "VLLM_START_TIMEOUT_SEC")
STOP_GRACE_SEC = 20.0


class StartupError(RuntimeError):
    pass


# ---------------------------------------------------------------- pure: the command line

def model_facts(model_path: Path, adapters: list[AdapterOnDisk]) -> ModelFacts:
    config_path = model_path / "config.json"
    if not config_path.is_file():
        raise StartupError(f"no model at {model_path} (config.json missing): run `python -m llm_server pull` "
                           "or set LLM_MODEL_PATH")
    config = json.loads(config_path.read_text())
    weights = sum(p.stat().st_size for p in model_path.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in model_path.glob("*.bin"))
    return ModelFacts(weight_bytes=weights, max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
                      adapter_ranks=tuple(a.rank for a in adapters if a.rank))


BUNDLED_TOOLS_TEMPLATE = Path(__file__).parent / "templates" / "chatml_tools.jinja"


def model_chat_template(model_path: Path) -> str:
    """The model's own chat template (tokenizer_config.json or chat_template.jinja), or ''."""
    jinja = model_path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model_path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template") or ""
        return template if isinstance(template, str) else json.dumps(template)
    return ""


def tool_calling_args(settings: LLMServerSettings, model_template: str) -> tuple[list[str], str]:
    """vLLM's tool-calling arguments for this model, and why. ChatML models (SmolLM2, Qwen) speak the
    Hermes format; one whose template cannot render tools gets the bundled template, which renders
    plain chats exactly as the model's own does."""
    parser = settings.tool_call_parser.strip().lower()
    if parser in ("", "none", "off"):
        return [], "tool calling off (LLM_TOOL_CALL_PARSER=none)"
    template = settings.chat_template
    if parser == "auto":
        if "<|im_start|>" not in model_template:
            return [], ("tool calling off: no known tool-call format for this model's chat template "
                        "(set LLM_TOOL_CALL_PARSER and LLM_CHAT_TEMPLATE)")
        parser = "hermes"
        if not template and "tools" not in model_template:
            template = str(BUNDLED_TOOLS_TEMPLATE)
    args = ["--enable-auto-tool-choice", "--tool-call-parser", parser, "--tool-strict-level", settings.tool_strict_level]
    if template:
        args += ["--chat-template", template]
    why = (f"tool calls: parser {parser}, strict level {settings.tool_strict_level}"
           + (f", chat template {template}" if template else ", the model's chat template"))
    return args, why


def vllm_command(settings: LLMServerSettings, python: str, engine: EngineConfig,
                 adapters: list[AdapterOnDisk], tool_args: list[str] | None = None) -> list[str]:
    argv = [python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(settings.resolved_model_path),
            "--served-model-name", settings.served_model_name,
            "--host", settings.vllm_host, "--port", str(settings.vllm_port),
            *engine.args, *(tool_args or [])]
    if adapters:
        argv += ["--lora-modules", *[f"{a.name}={a.path}" for a in adapters]]
    if settings.vllm_api_key:
        argv += ["--api-key", settings.vllm_api_key]
    return argv + shlex.split(settings.vllm_extra_args)


def vllm_environment(base: dict[str, str], engine: EngineConfig) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in OWN_VLLM_VARIABLES}
    env.update(engine.env)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # lets the control API load/unload adapters live
    env.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory; never reach for a hub
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


VLLM_PATCHES_DIR = Path(__file__).parent / "vllm_patches"


def cpu_lora_patch_env(env: dict[str, str], enabled: bool, has_cuda: bool) -> dict[str, str]:
    """Put llm_server/vllm_patches first on vLLM's PYTHONPATH: its sitecustomize installs the fast CPU
    LoRA path in every vLLM process (LLM_CPU_LORA_FAST_PATH; GPUs keep vLLM's own kernels)."""
    if enabled and not has_cuda:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(VLLM_PATCHES_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def redact(argv: list[str]) -> list[str]:
    return ["***" if i and argv[i - 1] == "--api-key" else a for i, a in enumerate(argv)]


# ---------------------------------------------------------------- the child process

class VllmProcess:
    """vLLM in its own session; its lines relayed to our stderr."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self._relay = threading.Thread(target=self._relay_output, name="vllm-log", daemon=True)
        self._relay.start()

    def _relay_output(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            sys.stderr.write("[vllm] " + raw.decode(errors="replace"))
            sys.stderr.flush()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        stop_process_group(self.popen, "vLLM", STOP_GRACE_SEC)


def stop_process_group(popen: subprocess.Popen, what: str, grace_sec: float) -> None:
    """SIGTERM an engine's whole session (it was started with start_new_session), SIGKILL after grace_sec."""
    if popen.poll() is not None:
        return
    log.info(f"stopping {what}", extra={"pid": popen.pid})
    for sig, wait in ((signal.SIGTERM, grace_sec), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            popen.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


async def wait_until_up(vllm: VllmClient, url: str, timeout: float, child: VllmProcess | None) -> float:
    """Poll vLLM's /health, logging progress; returns seconds waited."""
    started = time.monotonic()
    next_note = started + 15
    while True:
        waited = time.monotonic() - started
        if child is not None and not child.alive():
            raise StartupError(f"vLLM exited with code {child.popen.returncode} while starting (see [vllm] lines)")
        if await vllm.healthy():
            return waited
        if waited > timeout:
            raise StartupError(f"vLLM was not healthy after {timeout:.0f}s (VLLM_START_TIMEOUT_SEC)")
        if time.monotonic() >= next_note:
            log.info(f"waiting for vLLM at {url} ({waited:.0f}s)")
            next_note += 15
        await asyncio.sleep(1)


async def load_missing_adapters(vllm: VllmClient, adapters: list[AdapterOnDisk]) -> list[str]:
    """Load every adapter on disk that vLLM does not serve yet (an external vLLM starts without them)."""
    loaded = await vllm.loaded_adapters()
    added = []
    for adapter in adapters:
        if adapter.name not in loaded:
            await vllm.load_adapter(adapter.name, adapter.path)
            added.append(adapter.name)
    return added


# ---------------------------------------------------------------- serve

def serve(settings: LLMServerSettings, external_vllm: str | None = None) -> int:
    configure_logging("llm_server", settings.log_level)
    from llm_server.app import create_app

    adapters = discover_adapters(settings.resolved_adapters_dir)
    if not external_vllm:  # LLM_ENGINE=vllm|llamacpp|auto (docs/engines.md)
        from llm_server.engine import select_engine

        choice, caps = select_engine(settings)
        if choice.engine == "llamacpp":
            from llm_server.llamacpp import serve_llamacpp

            return serve_llamacpp(settings, caps)
    child: VllmProcess | None = None
    if external_vllm:
        vllm_url = external_vllm.rstrip("/").removesuffix("/v1")
    else:
        vllm_url = settings.vllm_url
        child = _launch(settings, adapters)

    failure: list[str] = []
    vllm = VllmClient(vllm_url, settings.vllm_api_key)
    server: uvicorn.Server | None = None

    async def watch() -> None:
        # Waits for vLLM, loads adapters it lacks, then stops the server if a launched vLLM dies.
        try:
            waited = await wait_until_up(vllm, vllm_url, settings.vllm_start_timeout_sec, child)
            log.info(f"vLLM is up at {vllm_url} after {waited:.0f}s", extra={"vllm_url": vllm_url})
            added = await load_missing_adapters(vllm, adapters)
            if added:
                log.info(f"loaded adapters into vLLM: {', '.join(added)}")
            while child is None or child.alive():
                await asyncio.sleep(1)
            failure.append(f"vLLM exited with code {child.popen.returncode}")
        except StartupError as exc:
            failure.append(str(exc))
        except Exception as exc:  # an adapter vLLM refuses must not go unnoticed
            failure.append(f"{type(exc).__name__}: {exc}")
        log.error(failure[-1])
        if server is not None:
            server.should_exit = True

    app = create_app(settings, vllm=vllm)
    original_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        task = asyncio.create_task(watch())
        async with original_lifespan(a):
            yield
        task.cancel()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM after its graceful shutdown; a no-op handler lets `finally` stop vLLM.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if child is not None:
            child.stop()
    if failure:
        print(f"error: {failure[-1]}", file=sys.stderr)
        return 1
    return 0


def _launch(settings: LLMServerSettings, adapters: list[AdapterOnDisk]) -> VllmProcess:
    python = _vllm_python(settings)
    caps: Capabilities = detect()
    facts = model_facts(settings.resolved_model_path, adapters)
    engine = engine_config(caps, facts, max_model_len=settings.max_model_len,
                           max_lora_rank=settings.max_lora_rank, dtype=settings.dtype)
    tool_args, tool_reason = tool_calling_args(settings, model_chat_template(settings.resolved_model_path))
    engine.reasons.append(tool_reason)
    argv = vllm_command(settings, python, engine, adapters, tool_args)
    log.info("device: " + json.dumps(caps.summary()))
    for reason in engine.reasons:
        log.info(f"engine: {reason}")
    log.info(f"adapters: {', '.join(a.name for a in adapters) or 'none'} (from {settings.resolved_adapters_dir})")
    log.info("launching vLLM: " + shlex.join(redact(argv)))
    if settings.cpu_lora_fast_path and not caps.has_cuda:
        log.info("engine: fast CPU LoRA path on (LLM_CPU_LORA_FAST_PATH=true, llm_server/vllm_patches)")
    env = cpu_lora_patch_env(vllm_environment(dict(os.environ), engine), settings.cpu_lora_fast_path, caps.has_cuda)
    return VllmProcess(argv, env)


def _vllm_python(settings: LLMServerSettings) -> str:
    python = settings.resolved_vllm_python
    if python.exists():
        return str(python)
    if settings.vllm_python:
        raise StartupError(f"VLLM_PYTHON={settings.vllm_python} does not exist")
    # No dedicated venv: a vLLM installed in this interpreter (the GPU image) will do.
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise StartupError(f"no vLLM found: {python} does not exist (run `make setup`) and this Python has no vllm")
