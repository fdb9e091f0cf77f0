"""Which serving engine `llm_server serve` runs: LLM_ENGINE=vllm|llamacpp|auto.

`choose_engine` is a pure function of the detected capabilities (llm_server.device), so every
choice is unit-testable with fabricated machines; the reason it returns goes to the start-up log.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_server.device import GIB, Capabilities

ENGINES = ("vllm", "llamacpp", "auto")
# vLLM-CPU's own footprint (Python, torch, the engine-core process) beside the weights and a KV cache
# of at least 1 GiB: under this much available memory it would swap or be killed.
VLLM_CPU_OVERHEAD_BYTES = 4 * GIB


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "vllm" | "llamacpp"
    reason: str


def vllm_cpu_memory_needed(weight_bytes: int) -> int:
    """Available memory vLLM-CPU needs: the weights twice (load-time copies), a 1 GiB KV cache, the runtime."""
    return 2 * weight_bytes + 1 * GIB + VLLM_CPU_OVERHEAD_BYTES


def choose_engine(requested: str, caps: Capabilities, weight_bytes: int) -> EngineChoice:
    requested = (requested or "auto").strip().lower()
    if requested not in ENGINES:
        raise ValueError(f"LLM_ENGINE must be one of {', '.join(ENGINES)}, not {requested!r}")
    if requested != "auto":
        return EngineChoice(requested, f"LLM_ENGINE={requested}")
    if caps.has_cuda:
        names = ", ".join(g.name for g in caps.gpus)
        return EngineChoice("vllm", f"auto: {len(caps.gpus)} GPU(s) ({names}) -> vLLM")
    needed = vllm_cpu_memory_needed(weight_bytes)
    have = caps.memory_available_bytes
    if not caps.avx512:
        return EngineChoice("llamacpp", "auto: no GPU and the CPU has no AVX-512 (vLLM-CPU's fast kernels need it) "
                                        "-> llama.cpp")
    if have < needed:
        return EngineChoice("llamacpp", f"auto: no GPU; AVX-512 but only {have / GIB:.1f} GiB available, vLLM-CPU "
                                        f"needs about {needed / GIB:.1f} GiB -> llama.cpp")
    return EngineChoice("vllm", f"auto: no GPU; CPU with AVX-512 and {have / GIB:.1f} GiB available "
                                f"(vLLM-CPU needs about {needed / GIB:.1f} GiB) -> vLLM-CPU")


def select_engine(settings) -> tuple[EngineChoice, Capabilities]:
    """LLM_ENGINE resolved on this machine (reads the device and the pulled model's weight size), logged."""
    from common.logging import get_logger
    from llm_server.device import detect

    caps = detect()
    model_dir = settings.resolved_model_path
    weight_bytes = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) if model_dir.is_dir() else 0
    choice = choose_engine(settings.engine, caps, weight_bytes)
    get_logger("llm_server.engine").info(f"engine: {choice.engine} ({choice.reason})",
                                         extra={"engine": choice.engine, "device": caps.summary()})
    return choice, caps
