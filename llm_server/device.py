"""Device capabilities and the vLLM engine arguments they call for.

Detection reads the machine (nvidia-smi, /proc); `engine_config` is a pure function of
what was detected, so every choice is unit-testable with fabricated capabilities.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

GIB = 1024**3
# LoRA ranks vLLM accepts for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] = (8, 0)


@dataclass(frozen=True)
class Capabilities:
    cpu_count: int
    cpu_flags: frozenset[str]
    memory_total_bytes: int
    memory_available_bytes: int
    gpus: tuple[GpuInfo, ...] = ()

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.cpu_flags

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.cpu_flags or "amx_bf16" in self.cpu_flags

    def summary(self) -> dict:
        return {
            "device": "cuda" if self.has_cuda else "cpu",
            "gpus": [{"name": g.name, "memory_gib": round(g.memory_bytes / GIB, 1),
                      "compute_capability": ".".join(map(str, g.compute_capability))} for g in self.gpus],
            "cpu_count": self.cpu_count,
            "avx512": self.avx512,
            "avx512_bf16": self.avx512_bf16,
            "memory_total_gib": round(self.memory_total_bytes / GIB, 1),
            "memory_available_gib": round(self.memory_available_bytes / GIB, 1),
        }


@dataclass(frozen=True)
class ModelFacts:
    """What the engine arguments depend on about the model."""

    weight_bytes: int
    max_position_embeddings: int = 2048
    adapter_ranks: tuple[int, ...] = ()


@dataclass
class EngineConfig:
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # why each choice was made, for the start-up log


# ---------------------------------------------------------------- pure mapping

def engine_config(caps: Capabilities, model: ModelFacts, *, max_model_len: int = 0,
                  max_lora_rank: int = 0, dtype: str = "") -> EngineConfig:
    """Map capabilities + model facts to vLLM arguments. Non-zero/non-empty overrides win."""
    config = EngineConfig(args=[])
    rank = max_lora_rank or lora_rank_for(model.adapter_ranks)
    config.args += ["--enable-lora", "--max-lora-rank", str(rank)]
    config.reasons.append(f"max-lora-rank {rank} (largest adapter rank {max(model.adapter_ranks, default=0)})")

    if caps.has_cuda:
        _gpu_args(caps, model, config, max_model_len, dtype)
    else:
        _cpu_args(caps, model, config, max_model_len, dtype)
    return config


def lora_rank_for(adapter_ranks: tuple[int, ...], floor: int = 16) -> int:
    """Smallest rank vLLM accepts that fits every adapter present (and ones trained later up to `floor`)."""
    needed = max((*adapter_ranks, floor))
    for rank in VLLM_LORA_RANKS:
        if rank >= needed:
            return rank
    raise ValueError(f"adapter rank {needed} is above vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def _cpu_args(caps: Capabilities, model: ModelFacts, config: EngineConfig, max_model_len: int, dtype: str) -> None:
    # vLLM's x86 CPU kernels do bf16 with AVX-512 (natively with avx512_bf16/AMX); without it fp32 is the safe choice.
    chosen_dtype = dtype or ("bfloat16" if caps.avx512 else "float32")
    config.reasons.append(f"dtype {chosen_dtype} (avx512={caps.avx512}, avx512_bf16={caps.avx512_bf16})")
    # KV cache lives in RAM on CPU: a quarter of what is left after the weights (twice, for load-time
    # copies) and 2 GiB for the platform's other services, between 1 and 32 GiB.
    spare = caps.memory_available_bytes - 2 * model.weight_bytes - 2 * GIB
    kv_gib = max(1, min(32, int(spare * 0.25 // GIB)))
    config.env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gib)
    config.reasons.append(f"VLLM_CPU_KVCACHE_SPACE={kv_gib} GiB of {caps.memory_available_bytes / GIB:.1f} GiB available")
    length = max_model_len or min(model.max_position_embeddings, 4096)  # long contexts are slow on CPU anyway
    config.args += ["--dtype", chosen_dtype, "--max-model-len", str(length), "--max-loras", "4"]


def _gpu_args(caps: Capabilities, model: ModelFacts, config: EngineConfig, max_model_len: int, dtype: str) -> None:
    gpu = min(caps.gpus, key=lambda g: g.memory_bytes)  # tensor parallel is bound by the smallest card
    chosen_dtype = dtype or ("bfloat16" if gpu.compute_capability >= (8, 0) else "float16")
    config.reasons.append(f"dtype {chosen_dtype} (compute capability {gpu.compute_capability})")
    # Leave more headroom on small cards, where CUDA context and activations are a larger share.
    utilization = 0.90 if gpu.memory_bytes >= 20 * GIB else 0.85
    length = max_model_len or min(model.max_position_embeddings, 32768)
    config.args += ["--dtype", chosen_dtype, "--max-model-len", str(length), "--max-loras", "8",
                    "--gpu-memory-utilization", f"{utilization:.2f}"]
    if len(caps.gpus) > 1:
        config.args += ["--tensor-parallel-size", str(len(caps.gpus))]
    config.reasons.append(f"gpu-memory-utilization {utilization:.2f} on {gpu.name} ({gpu.memory_bytes / GIB:.0f} GiB)")


# ---------------------------------------------------------------- detection (reads the machine)

def detect() -> Capabilities:
    total, available = _meminfo()
    return Capabilities(
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        cpu_flags=_cpu_flags(),
        memory_total_bytes=total,
        memory_available_bytes=available,
        gpus=_detect_gpus(),
    )


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def parse_meminfo(meminfo: str) -> tuple[int, int]:
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * 1024  # kB
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", total)


def parse_nvidia_smi(csv: str) -> tuple[GpuInfo, ...]:
    """Parse `nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits`."""
    gpus = []
    for line in csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        cc = (8, 0)
        if len(parts) > 2 and "." in parts[2]:
            major, minor = parts[2].split(".", 1)
            cc = (int(major), int(minor))
        gpus.append(GpuInfo(parts[0], int(parts[1]) * 1024**2, cc))
    return tuple(gpus)


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpu_flags(f.read())
    except OSError:
        return frozenset()


def _meminfo() -> tuple[int, int]:
    try:
        with open("/proc/meminfo") as f:
            return parse_meminfo(f.read())
    except OSError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, pages


def _detect_gpus() -> tuple[GpuInfo, ...]:
    # nvidia-smi first: the platform venv's torch is a CPU build and would see no GPU even on a GPU host.
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                return parse_nvidia_smi(out.stdout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not os.path.exists("/dev/nvidia0"):  # no driver device node: skip torch's slow import
        return ()
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    return tuple(
        GpuInfo(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory,
                torch.cuda.get_device_capability(i))
        for i in range(torch.cuda.device_count()))
