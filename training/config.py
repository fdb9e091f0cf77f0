"""One config for SFT and DPO runs: a dataclass whose defaults are the Llama-3.1-8B reference recipe.

A YAML file sets any field; CLI flags override the file. Unknown keys are an error (a typo in
a config must not silently fall back to a default). No heavy imports here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EMBEDDED_BASE_MODEL = "SmolLM2-135M-Instruct"


def tutorstack_home() -> Path:
    return Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))


def default_base_model() -> str:
    """The embedded model that `python -m llm_server pull` converts (no hub needed)."""
    return str(tutorstack_home() / "models" / EMBEDDED_BASE_MODEL)


@dataclass
class TrainConfig:
    name: str = "tutor"
    stage: str = "sft"  # sft | dpo
    base_model: str = field(default_factory=default_base_model)  # HF id or local path
    train_files: list[str] = field(default_factory=lambda: [
        "data/training/processed/tool_sft.jsonl",
        "data/training/processed/rag_sft.jsonl",
        "data/training/processed/style_sft.jsonl",
    ])
    eval_files: list[str] = field(default_factory=list)
    output_dir: str = ""  # default: see adapter_dir()

    # LoRA (reference recipe: r 8, alpha 32, dropout 0.1, all linear projections)
    method: str = "lora"  # lora | qlora (qlora falls back to lora without CUDA + bitsandbytes)
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    # Optimisation
    learning_rate: float = 2e-4
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    max_length: int = 3072
    packing: bool = True
    gradient_checkpointing: bool = True
    bf16: str = "auto"  # auto | true | false; auto = bf16 where the GPU supports it
    seed: int = 42
    speedups: bool = True  # training.speedups.apply_speedups (fused kernels on GPU; no-op on CPU)
    # Each speed-up below is one switch, on by default; each falls back (with a log line) where it can't run.
    fp8: bool = True  # frozen base weights stored and multiplied in FP8 (CUDA cc >= 8.9); LoRA stays bf16/fp32
    cudnn_attention: bool = True  # cuDNN first in SDPA's backend order
    # LoRA side path + dropout in Triton kernels (no dropped copy or mask stored; same loss curve as peft's with
    # dropout 0.1, bench/results/sft_gpu_h200.md); false = the torch fused path. Needs Triton on CUDA, else says so
    lora_kernels: bool = True
    unchecked_layers: int = -1  # decoder layers that skip the checkpoint recompute; -1 = as many as fit the budget
    # checkpointed layers that keep the attention op's outputs, so their recompute skips attention (~0.14 GiB per
    # layer at the 8B shape, 6 x 3072 tokens); -1 = as many as fit what the unchecked layers leave of the budget
    saved_attention_layers: int = -1
    activation_budget_gib: float = 0.0  # budget for those layers' activations; 0 = 40% of the GPU memory left free

    # Bookkeeping
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2

    # DPO only
    sft_adapter: str = ""  # the SFT adapter to continue from
    beta: float = 0.1

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        unknown = set(data) - cls.field_names()
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        config = cls(**data)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        data: dict[str, Any] = {}
        if path:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: a config file must be a YAML mapping")
            data.update(loaded)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)

    def validate(self) -> None:
        errors = []
        if self.stage not in ("sft", "dpo"):
            errors.append(f"stage must be sft or dpo, not {self.stage!r}")
        if self.method not in ("lora", "qlora"):
            errors.append(f"method must be lora or qlora, not {self.method!r}")
        if self.bf16 not in ("auto", "true", "false", True, False):
            errors.append("bf16 must be auto, true or false")
        if int(self.unchecked_layers) < -1:
            errors.append("unchecked_layers must be -1 (auto) or >= 0")
        if int(self.saved_attention_layers) < -1:
            errors.append("saved_attention_layers must be -1 (auto) or >= 0")
        if float(self.activation_budget_gib) < 0:
            errors.append("activation_budget_gib must be >= 0")
        for name in ("lora_r", "lora_alpha", "per_device_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps", "save_steps"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            errors.append("lora_dropout must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            errors.append("warmup_ratio must be in [0, 1)")
        if self.learning_rate <= 0:
            errors.append("learning_rate must be > 0")
        if not self.train_files:
            errors.append("train_files is empty")
        if self.stage == "dpo" and not self.sft_adapter:
            errors.append("a dpo run needs sft_adapter (the SFT adapter directory to continue from)")
        if not self.name or "/" in self.name:
            errors.append("name must be non-empty and contain no '/'")
        if errors:
            raise ValueError("invalid training config: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --- where things go
    def adapter_dir(self) -> Path:
        """outputs/adapter/<name>, or $OUT_BASE/adapter_<name> when OUT_BASE is set."""
        if self.output_dir:
            return Path(self.output_dir)
        out_base = os.environ.get("OUT_BASE")
        return Path(out_base) / f"adapter_{self.name}" if out_base else Path("outputs") / "adapter" / self.name

    def checkpoint_dir(self) -> Path:
        # Beside the adapter, not inside it, so publishing an adapter never copies checkpoints.
        adapter = self.adapter_dir()
        return adapter.with_name(adapter.name + ".checkpoints")

    def log_dir(self) -> Path:
        return Path(os.environ.get("LOG_DIR", "runs")) / f"{self.stage}_{self.name}"
