"""export-config: the same run as a LLaMA-Factory YAML (+ dataset_info.json) or an ms-swift command."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from training.config import TrainConfig


def _template(base_model: str) -> str:
    name = base_model.lower()
    for key, template in (("llama-3", "llama3"), ("llama3", "llama3"), ("qwen3", "qwen3"), ("qwen", "qwen"),
                          ("smollm", "default"), ("mistral", "mistral")):
        if key in name:
            return template
    return "default"


def _bf16(config: TrainConfig) -> bool:
    return str(config.bf16).lower() in ("auto", "true")  # these tools target GPUs, where auto means bf16


def llamafactory(config: TrainConfig, out_dir: Path) -> list[Path]:
    datasets = {f"tutorstack_{Path(f).stem}": {
        "file_name": str(Path(f).resolve()), "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system", "observation_tag": "tool", "function_tag": "function_call"},
    } for f in config.train_files}
    if config.stage == "dpo":
        for entry in datasets.values():
            entry.update({"ranking": True, "formatting": "alpaca",
                          "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}})
            entry.pop("tags")
    run = {
        "model_name_or_path": config.base_model,
        "stage": config.stage, "do_train": True, "finetuning_type": "lora",
        "lora_rank": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "lora_target": ",".join(config.target_modules),
        "dataset": ",".join(datasets), "dataset_dir": str(out_dir.resolve()), "template": _template(config.base_model),
        "cutoff_len": config.max_length, "packing": config.packing,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate, "num_train_epochs": config.num_epochs,
        "lr_scheduler_type": config.lr_scheduler, "warmup_ratio": config.warmup_ratio,
        "bf16": _bf16(config), "gradient_checkpointing": config.gradient_checkpointing,
        "logging_steps": config.logging_steps, "save_steps": config.save_steps, "seed": config.seed,
        "output_dir": str(config.adapter_dir()), "report_to": "tensorboard",
    }
    if config.max_steps > 0:
        run["max_steps"] = config.max_steps
    if config.method == "qlora":
        run["quantization_bit"] = 4
    if config.stage == "dpo":
        run.update({"pref_beta": config.beta, "adapter_name_or_path": config.sft_adapter})
    out_dir.mkdir(parents=True, exist_ok=True)
    info, yaml_path = out_dir / "dataset_info.json", out_dir / f"llamafactory_{config.stage}_{config.name}.yaml"
    info.write_text(json.dumps(datasets, indent=2) + "\n", encoding="utf-8")
    yaml_path.write_text(yaml.safe_dump(run, sort_keys=False), encoding="utf-8")
    return [yaml_path, info]


def swift_command(config: TrainConfig) -> list[str]:
    command = ["swift", "rlhf" if config.stage == "dpo" else "sft"]
    if config.stage == "dpo":
        command += ["--rlhf_type", "dpo", "--beta", str(config.beta), "--adapters", config.sft_adapter]
    command += [
        "--model", config.base_model, "--train_type", "lora",
        "--dataset", *[str(Path(f).resolve()) for f in config.train_files],
        "--lora_rank", str(config.lora_r), "--lora_alpha", str(config.lora_alpha),
        "--lora_dropout", str(config.lora_dropout), "--target_modules", *config.target_modules,
        "--learning_rate", str(config.learning_rate), "--num_train_epochs", str(config.num_epochs),
        "--warmup_ratio", str(config.warmup_ratio), "--lr_scheduler_type", config.lr_scheduler,
        "--per_device_train_batch_size", str(config.per_device_batch_size),
        "--gradient_accumulation_steps", str(config.gradient_accumulation_steps),
        "--max_length", str(config.max_length), "--packing", str(config.packing).lower(),
        "--gradient_checkpointing", str(config.gradient_checkpointing).lower(),
        "--torch_dtype", "bfloat16" if _bf16(config) else "float32",
        "--logging_steps", str(config.logging_steps), "--save_steps", str(config.save_steps),
        "--seed", str(config.seed), "--output_dir", str(config.adapter_dir()),
    ]
    if config.max_steps > 0:
        command += ["--max_steps", str(config.max_steps)]
    if config.method == "qlora":
        command += ["--quant_method", "bnb", "--quant_bits", "4"]
    return command


def swift(config: TrainConfig, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"swift_{config.stage}_{config.name}.sh"
    # ms-swift reads the `messages` JSONL format natively, so the data files are passed as they are.
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + shlex.join(swift_command(config)) + "\n",
                    encoding="utf-8")
    path.chmod(0o755)
    return [path]


def export(config: TrainConfig, to: str, out_dir: str | Path) -> list[Path]:
    exporters = {"llamafactory": llamafactory, "swift": swift}
    if to not in exporters:
        raise ValueError(f"--to must be one of {', '.join(exporters)}")
    return exporters[to](config, Path(out_dir))
