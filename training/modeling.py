"""Loading base models, tokenizers and adapters; device and precision choices.

The one place that knows about CUDA vs CPU, bf16 support and the QLoRA fallback, so the
steps (sft, dpo, smoke, predict, merge) stay free of device branches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("training")


@dataclass
class Device:
    name: str  # "cuda" | "cpu"
    bf16: bool
    can_4bit: bool


def detect_device() -> Device:
    import torch

    if torch.cuda.is_available():
        import importlib.util

        return Device("cuda", torch.cuda.is_bf16_supported(), importlib.util.find_spec("bitsandbytes") is not None)
    return Device("cpu", False, False)


def use_bf16(setting, device: Device) -> bool:
    """bf16 'auto' means: where the GPU supports it. CPU training stays fp32 (bf16 is slow there)."""
    if str(setting).lower() == "auto":
        return device.bf16
    return str(setting).lower() == "true" and device.name == "cuda"


def resolve_method(method: str, device: Device) -> str:
    """QLoRA needs a GPU and bitsandbytes; without them say so clearly and train plain LoRA."""
    if method == "qlora" and not device.can_4bit:
        why = "no CUDA device" if device.name != "cuda" else "bitsandbytes is not installed"
        log.warning("QLoRA (4-bit) requested but %s: falling back to LoRA in full precision", why)
        print(f"[training] QLoRA unavailable ({why}); training LoRA instead.", flush=True)
        return "lora"
    return method


def check_base_model(path_or_id: str) -> None:
    """A missing local model gets a useful message instead of a hub lookup failure."""
    looks_local = path_or_id.startswith(("/", ".", "~")) or Path(path_or_id).exists()
    if looks_local and not (Path(path_or_id).expanduser() / "config.json").exists():
        raise FileNotFoundError(
            f"base model not found at {path_or_id} (no config.json). Run `python -m llm_server pull` for the "
            "embedded SmolLM2-135M-Instruct, or pass --base-model <HF id or local dir>.")


def load_tokenizer(path_or_id: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path_or_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path_or_id: str, *, method: str = "lora", device: Device | None = None, bf16: bool = False,
               attn_implementation: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    check_base_model(path_or_id)
    device = device or detect_device()
    kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")


def with_speedups(model, *, device: str, enable: bool):
    """training.speedups is optional GPU work; imported lazily so CPU installs never need it."""
    if not enable:
        return model
    try:
        from training.speedups import apply_speedups
    except ImportError as exc:
        log.info("speedups unavailable (%s); model unchanged", exc)
        return model
    return apply_speedups(model, device=device, enable=enable)


def load_for_inference(base_model: str, adapter: str | None = None):
    """Base model (+ adapter, not merged) in eval mode, with its tokenizer (adapter's if it ships one)."""
    device = detect_device()
    model = load_model(base_model, device=device, bf16=device.bf16)
    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base_model
    tokenizer = load_tokenizer(tokenizer_source)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.to(device.name).eval()
    return model, tokenizer, device
