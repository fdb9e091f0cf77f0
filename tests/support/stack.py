"""Bring up the real stack (llm_server/vLLM, ai_service, gateway) for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO_ROOT, Process, free_port, python_module, wait_check_ok, wait_healthy

BASE_MODEL = "SmolLM2-135M-Instruct"
SAMPLE_ADAPTER = "peer-v1"
VLLM_START_TIMEOUT = float(os.environ.get("TUTORSTACK_VLLM_START_TIMEOUT", "420"))


def tutorstack_home() -> Path:
    return Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))


@dataclass
class VllmStack:
    vllm_url: str  # http://127.0.0.1:PORT (OpenAI API under /v1)
    control_url: str  # llm_server control API
    adapters_dir: Path
    api_key: str
    process: Process


def ensure_model_and_sample_adapter() -> None:
    # Both are cached under TUTORSTACK_HOME; `make test` has already run them, so these are no-ops there.
    for command in (["pull"], ["build-sample-adapter"]):
        subprocess.run(python_module("llm_server", *command), cwd=REPO_ROOT, check=True)


def start_vllm(workdir: Path, engine: str = "vllm") -> VllmStack:
    """llm_server serving the model on `engine` (LLM_ENGINE: vllm, or llamacpp behind the same OpenAI API)."""
    ensure_model_and_sample_adapter()
    adapters_dir = workdir / "adapters"  # a copy: tests publish adapters without touching the user's
    shutil.copytree(tutorstack_home() / "adapters" / SAMPLE_ADAPTER, adapters_dir / SAMPLE_ADAPTER)
    vllm_port, control_port = free_port(), free_port()
    api_key = "test-vllm-key"
    env = {**os.environ, "VLLM_PORT": str(vllm_port), "LLM_SERVER_PORT": str(control_port),
           "LLM_ADAPTERS_DIR": str(adapters_dir), "LLM_API_KEY_LOCAL": api_key, "APP_ENV": "test",
           "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN,
           "LLM_SERVER_HOST": "127.0.0.1", "LLM_ENGINE": engine}
    proc = Process("llm_server", python_module("llm_server", "serve"), env, workdir)
    stack = VllmStack(f"http://127.0.0.1:{vllm_port}", f"http://127.0.0.1:{control_port}", adapters_dir, api_key, proc)
    try:
        wait_healthy(f"{stack.control_url}/readyz", proc, VLLM_START_TIMEOUT)
    except Exception:
        proc.stop()
        raise
    return stack


# Internal services ai_service delegates to. The test stack gives each a port and a token up
# front, so ai_service knows where they are; each service's own fixture starts it on demand
# (start_internal_service) and a test that needs none of them starts none.
INTERNAL_SERVICES = ("writing", "guided", "practice", "health", "feedback")
INTERNAL_SERVICE_TOKEN = "test-internal-token"  # internal services -> ai_service (AI_SERVICE_INTERNAL_TOKEN)
GRAPHRAG_TOKEN = "test-graphrag-token"
LLM_SERVER_TOKEN = "test-llm-server-token"


@dataclass
class InternalService:
    name: str
    port: int
    token: str  # the service's own token (<NAME>_API_TOKEN)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Platform:
    gateway_url: str
    ai_service_url: str
    shared_token: str
    gateway_env: dict
    processes: dict[str, Process]
    internal: dict[str, InternalService]
    redis_url: str = ""
    ai_env: dict | None = None  # ai_service's environment, to restart it the same way

    def create_key(self, name: str, classification: str = "private", rpm: int = 1000, *, role: str = "student",
                   user_id: str | None = None) -> str:
        result = subprocess.run(
            python_module("gateway", "keys", "create", "--name", name, "--classification", classification,
                          "--rpm", str(rpm), "--role", role, *(["--user-id", user_id] if user_id else [])),
            env=self.gateway_env, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
        return result.stdout.strip()

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.stop()


COURSE_READER = "data/samples/course_reader"


def start_graphrag(workdir: Path) -> tuple[Process, str]:
    """graphrag serving an index of the sample course reader, built at start-up (citations
    relative to the repo root, as `make run` does)."""
    port = free_port()
    env = {**os.environ, "APP_ENV": "test", "GRAPHRAG_PORT": str(port), "GRAPHRAG_HOST": "127.0.0.1",
           "GRAPHRAG_API_TOKEN": GRAPHRAG_TOKEN,
           "GRAPH_RAG_INDEX_PATH": str(workdir / "graphrag-index"),
           "VECTOR_STORE_PATH": str(workdir / "graphrag-vectors"), "EMBEDDING_PROVIDER": "auto"}
    proc = Process("graphrag", python_module("graphrag", "serve", "--build-from", COURSE_READER), env, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/readyz", proc, 180)
    except Exception:
        proc.stop()
        raise
    return proc, url


def start_platform(workdir: Path, redis_url: str, *, local_url: str, local_api_key: str,
                   cloud_url: str = "", graphrag_url: str = "", ai_env: dict | None = None,
                   gateway_env: dict | None = None) -> Platform:
    """ai_service (LLM_BASE_URL_LOCAL=local_url, optional cloud tier) and the gateway in front of it."""
    token = "test-shared-token"
    ai_port, gateway_port = free_port(), free_port()
    internal = {name: InternalService(name, free_port(), f"test-{name}-token") for name in INTERNAL_SERVICES}
    common = {**os.environ, "APP_ENV": "test", "AI_GATEWAY_SHARED_TOKEN": token, "REDIS_URL": redis_url,
              "GATEWAY_KEY_SIGNING_SECRET": "test-key-signing-secret"}
    ai = {
        **common,
        "AI_SERVICE_INTERNAL_TOKEN": INTERNAL_SERVICE_TOKEN,
        "GRAPHRAG_API_TOKEN": GRAPHRAG_TOKEN,
        "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN,
        **{f"{name.upper()}_SERVICE_URL": svc.url for name, svc in internal.items()},
        **{f"{name.upper()}_API_TOKEN": svc.token for name, svc in internal.items()},
        "AI_SERVICE_PORT": str(ai_port),
        "LLM_BASE_URL_LOCAL": f"{local_url}/v1",
        "LLM_API_KEY_LOCAL": local_api_key,
        "LLM_MODEL_LOCAL": BASE_MODEL,
        **({"GRAPH_RAG_URL": graphrag_url} if graphrag_url else {"GRAPH_RAG_ENABLED": "false"}),
        **({"LLM_BASE_URL_CLOUD": f"{cloud_url}/v1", "LLM_API_KEY_CLOUD": local_api_key,
            "LLM_MODEL_CLOUD": BASE_MODEL} if cloud_url else {}),
        **(ai_env or {}),
    }
    gateway = {**common, "GATEWAY_PORT": str(gateway_port), "AI_SERVICE_URL": f"http://127.0.0.1:{ai_port}",
               **(gateway_env or {})}
    processes = {"ai_service": Process("ai_service", python_module("ai_service"), ai, workdir),
                 "gateway": Process("gateway", python_module("gateway", "serve"), gateway, workdir)}
    platform = Platform(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{ai_port}", token, gateway, processes,
                        internal, redis_url, ai)
    try:
        wait_healthy(f"{platform.ai_service_url}/healthz", processes["ai_service"], 60)
        wait_healthy(f"{platform.gateway_url}/healthz", processes["gateway"], 60)
        # chats wait for the moderation models anyway; tests start once they are in
        wait_check_ok(f"{platform.ai_service_url}/readyz", "moderation", processes["ai_service"], 240)
    except Exception:
        platform.stop()
        raise
    return platform


def internal_service_env(platform: Platform, name: str, extra: dict | None = None) -> dict:
    """The environment an internal service runs with in the test stack: its port and token, the
    way back to ai_service (AI_SERVICE_URL + AI_SERVICE_INTERNAL_TOKEN), Redis and the other
    services' URLs and tokens (for a service that calls another, e.g. guided -> writing)."""
    svc = platform.internal[name]
    env = {**os.environ, "APP_ENV": "test", "REDIS_URL": platform.redis_url,
           f"{name.upper()}_PORT": str(svc.port), f"{name.upper()}_HOST": "127.0.0.1",
           f"{name.upper()}_API_TOKEN": svc.token,
           "AI_SERVICE_URL": platform.ai_service_url, "AI_SERVICE_INTERNAL_TOKEN": INTERNAL_SERVICE_TOKEN}
    for other, other_svc in platform.internal.items():
        if other != name:
            env[f"{other.upper()}_SERVICE_URL"] = other_svc.url
            env[f"{other.upper()}_API_TOKEN"] = other_svc.token
    return {**env, **(extra or {})}


def start_internal_service(platform: Platform, name: str, argv: list[str], workdir: Path,
                           extra_env: dict | None = None, timeout: float = 120) -> Process:
    """Start one of INTERNAL_SERVICES on the port ai_service already points at; idempotent."""
    if name in platform.processes and platform.processes[name].alive():
        return platform.processes[name]
    proc = Process(name, argv, internal_service_env(platform, name, extra_env), workdir)
    platform.processes[name] = proc
    wait_healthy(f"{platform.internal[name].url}/healthz", proc, timeout)
    return proc
