"""Several vLLM-CPU replicas on this machine, each with its llm_server control API as a "sidecar"
(`llm_server serve --external-vllm`), the way deploy/k8s/vllm.yaml runs them: for the scale-out
tests (tests/scaleout) and bench/bench_replicas.py.

vLLM is launched with the command line llm_server itself would build (llm_server.serve.vllm_command
and the device's engine arguments), but with a small KV cache (VLLM_CPU_KVCACHE_SPACE GiB) and few
concurrent sequences, so that two replicas of the 135M model fit next to everything else.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import Process, free_port, python_module, wait_healthy
from tests.support.stack import (LLM_SERVER_TOKEN, SAMPLE_ADAPTER, VLLM_START_TIMEOUT,
                                 ensure_model_and_sample_adapter, tutorstack_home)

API_KEY = "test-vllm-key"


@dataclass
class ReplicaProcess:
    index: int
    vllm_url: str  # http://127.0.0.1:PORT (OpenAI API under /v1)
    control_url: str  # its llm_server
    vllm: Process
    control: Process

    @property
    def name(self) -> str:
        return self.vllm_url.removeprefix("http://")

    def kill_vllm(self) -> None:
        """SIGKILL the whole vLLM process group: a replica that dies mid-run."""
        try:
            os.killpg(self.vllm.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.vllm.popen.wait(timeout=30)

    def stop(self) -> None:
        self.control.stop()
        self.vllm.stop(timeout=20)


def copy_adapter(adapters_dir: Path, name: str, source: str = SAMPLE_ADAPTER) -> Path:
    """A copy of the shipped sample adapter under another name (same weights: the serving cost of a
    distinct LoRA is the same, what it says does not matter here)."""
    target = adapters_dir / name
    if not target.exists():
        shutil.copytree(tutorstack_home() / "adapters" / source, target)
    return target


def _vllm_argv_env(port: int, adapters_dir: Path, kv_gib: int, max_num_seqs: int, threads: str):
    from llm_server.adapters import discover_adapters
    from llm_server.device import detect, engine_config
    from llm_server.serve import (_vllm_python, model_chat_template, model_facts, tool_calling_args,
                                  vllm_command, vllm_environment)
    from llm_server.settings import LLMServerSettings

    settings = LLMServerSettings(VLLM_PORT=port, VLLM_HOST="127.0.0.1", LLM_ADAPTERS_DIR=str(adapters_dir),
                                 LLM_API_KEY_LOCAL=API_KEY, APP_ENV="test", LLM_SERVER_API_TOKEN=LLM_SERVER_TOKEN,
                                 LLM_MAX_MODEL_LEN=2048)
    adapters = discover_adapters(adapters_dir)
    engine = engine_config(detect(), model_facts(settings.resolved_model_path, adapters),
                           max_model_len=settings.max_model_len)
    tool_args, _ = tool_calling_args(settings, model_chat_template(settings.resolved_model_path))
    argv = vllm_command(settings, _vllm_python(settings), engine, adapters, tool_args)
    argv += ["--max-num-seqs", str(max_num_seqs)]
    env = vllm_environment(dict(os.environ), engine)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gib)
    if threads:
        env["VLLM_CPU_OMP_THREADS_BIND"] = threads
    return argv, env


def start_replicas(workdir: Path, count: int, adapters_dir: Path, *, kv_gib: int = 1, max_num_seqs: int = 8,
                   threads: list[str] | None = None) -> list[ReplicaProcess]:
    """`count` replicas serving the adapters in `adapters_dir` (shared, like the k8s adapters volume),
    started side by side; returns once every vLLM and every control API is ready."""
    ensure_model_and_sample_adapter()
    replicas: list[ReplicaProcess] = []
    try:
        for index in range(count):
            vllm_port, control_port = free_port(), free_port()
            argv, env = _vllm_argv_env(vllm_port, adapters_dir, kv_gib, max_num_seqs,
                                       (threads or [""] * count)[index])
            vllm = Process(f"vllm-replica{index}", argv, env, workdir)
            control_env = {**os.environ, "LLM_SERVER_PORT": str(control_port), "LLM_SERVER_HOST": "127.0.0.1",
                           "LLM_ADAPTERS_DIR": str(adapters_dir), "LLM_API_KEY_LOCAL": API_KEY, "APP_ENV": "test",
                           "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN, "VLLM_START_TIMEOUT_SEC": str(VLLM_START_TIMEOUT)}
            control = Process(f"llm_server-replica{index}",
                              python_module("llm_server", "serve", "--external-vllm", f"http://127.0.0.1:{vllm_port}"),
                              control_env, workdir)
            replicas.append(ReplicaProcess(index, f"http://127.0.0.1:{vllm_port}",
                                           f"http://127.0.0.1:{control_port}", vllm, control))
        started = time.monotonic()
        with ThreadPoolExecutor(count) as pool:  # start side by side: both load at once
            list(pool.map(lambda r: wait_healthy(f"{r.vllm_url}/health", r.vllm, VLLM_START_TIMEOUT), replicas))
        for replica in replicas:
            wait_healthy(f"{replica.control_url}/readyz", replica.control, 120)
        print(f"{count} vLLM replicas ready in {time.monotonic() - started:.0f}s", flush=True)
    except BaseException:  # Ctrl-C while they load included: never leave a replica behind
        for replica in replicas:
            replica.stop()
        raise
    return replicas
