"""SFT and DPO LoRA training with TRL: one code path for CPU here and a GPU with an 8B model.

Layout of one run named N (see TrainConfig.adapter_dir):
    outputs/adapter/N/               final PEFT adapter + tokenizer + manifest.json (what gets published)
    outputs/adapter/N.checkpoints/   Trainer checkpoints; a re-run resumes from the last one
    $LOG_DIR/<stage>_N/              TensorBoard event files
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from training import manifest
from training.config import TrainConfig
from training.dataspec import DataError, load_records, read_records, to_template_messages
from training.modeling import detect_device, load_model, load_tokenizer, lora_config, resolve_method, use_bf16


log = logging.getLogger("training")


# ---------------------------------------------------------------- speed-ups


def with_speedups(model, config: TrainConfig, device):
    """training.speedups with the config's switches (each falls back with a log line off a capable GPU)."""
    if not config.speedups:
        log.info("speedups: disabled by config; model unchanged")
        return model
    try:
        from training.speedups import apply_speedups
    except ImportError as exc:
        log.info("speedups unavailable (%s); model unchanged", exc)
        return model
    budget = float(config.activation_budget_gib)
    auto = config.unchecked_layers < 0 or config.saved_attention_layers < 0
    if config.gradient_checkpointing and auto and budget <= 0 and device.name.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        budget = 0.4 * free / 2**30
    tokens = int(config.per_device_batch_size) * int(config.max_length)
    return apply_speedups(
        model, device=device.name, enable=True, fp8=config.fp8, cudnn_attention=config.cudnn_attention,
        lora_kernels=config.lora_kernels,
        unchecked_layers=config.unchecked_layers if config.gradient_checkpointing else None,
        saved_attention_layers=config.saved_attention_layers if config.gradient_checkpointing else None,
        activation_budget_gib=budget, tokens_per_micro_batch=tokens,
    )


# ---------------------------------------------------------------- data


def sft_rows(paths: list[str]) -> list[dict]:
    """Chat records (or distilled pairs) -> {"messages": [...]} rows for TRL's chat-template path."""
    return [{"messages": to_template_messages(record["messages"])} for record in load_records(paths)]


def preference_rows(paths: list[str]) -> list[dict]:
    """prompt/chosen/rejected records; strings or message lists (conversational form)."""
    rows, problems = [], []
    for path in paths:
        for line, obj, error in read_records(path):
            where = f"{path}:{line}"
            if error:
                problems.append(f"{where}: {error}")
                continue
            missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(obj, dict) or not obj.get(k)]
            if missing:
                problems.append(f"{where}: missing or empty {', '.join(missing)}")
                continue
            rows.append(_conversational_preference(obj))
    if problems:
        raise ValueError("invalid preference data:\n" + "\n".join(problems))
    return rows


def _conversational_preference(obj: dict) -> dict:
    # Both sides in one form, so the tokenizer's chat template wraps prompt and answers consistently.
    as_messages = lambda value, role: value if isinstance(value, list) else [{"role": role, "content": value}]  # noqa: E731
    return {"prompt": as_messages(obj["prompt"], "user"),
            "chosen": as_messages(obj["chosen"], "assistant"),
            "rejected": as_messages(obj["rejected"], "assistant")}


# ---------------------------------------------------------------- shared trainer arguments


def common_args(config: TrainConfig, device, bf16: bool) -> dict[str, Any]:
    return dict(
        output_dir=str(config.checkpoint_dir()),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        bf16=bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        max_length=config.max_length,
        seed=config.seed,
        report_to=["tensorboard"],
        include_num_input_tokens_seen="all",
        save_only_model=False,  # optimizer and scheduler state are what make a resume exact
        use_cpu=device.name == "cpu",
        dataloader_num_workers=0,
    )


def last_checkpoint(config: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    directory = config.checkpoint_dir()
    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def _prepare_run(config: TrainConfig, resume: bool) -> str | None:
    checkpoint = last_checkpoint(config) if resume else None
    if not resume and config.checkpoint_dir().exists():
        shutil.rmtree(config.checkpoint_dir())  # a fresh start must not pick up old optimizer state
    log_dir = config.log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)  # read by transformers' TensorBoardCallback
    if checkpoint:
        print(f"[training] resuming from {checkpoint}", flush=True)
    return checkpoint


def _finish(trainer, tokenizer, config: TrainConfig, *, stage: str, data_files: list[str], started: float,
            checkpoint: str | None, method: str, device, extra_metrics: dict | None = None) -> Path:
    """Save adapter + tokenizer + manifest into a temp dir, then swap it in (never half an adapter)."""
    target = config.adapter_dir()
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    state = trainer.state
    elapsed = time.time() - started
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    metrics = {
        "global_step": state.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_runtime_s": round(elapsed, 2),
        "steps_per_s": round(state.global_step / elapsed, 4) if elapsed else None,
        "tokens_seen": int(getattr(state, "num_input_tokens_seen", 0) or 0),
        **(extra_metrics or {}),
    }
    data = manifest.build(
        name=config.name, stage=stage, base_model=config.base_model, config=config.to_dict(),
        data_files=data_files, metrics=metrics,
        extra={"method": method, "device": device.name, "resumed_from": checkpoint,
               "log_dir": str(config.log_dir()), "checkpoint_dir": str(config.checkpoint_dir())})
    manifest.write(tmp, data)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    print(f"[training] {stage} adapter written to {target}\n{json.dumps(metrics, indent=2)}", flush=True)
    return target


# ---------------------------------------------------------------- SFT


def run_sft(config: TrainConfig, *, resume: bool = True, callbacks: list | None = None) -> Path:
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    rows = sft_rows(config.train_files)
    eval_rows = sft_rows(config.eval_files) if config.eval_files else None
    device = detect_device()
    method = resolve_method(config.method, device)
    bf16 = use_bf16(config.bf16, device)
    tokenizer = load_tokenizer(config.base_model)
    model = load_model(config.base_model, method=method, device=device, bf16=bf16)
    model = get_peft_model(model, lora_config(config))
    model = with_speedups(model, config, device)
    checkpoint = _prepare_run(config, resume)
    args = SFTConfig(packing=config.packing, eval_strategy="no", **common_args(config, device, bf16))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                         processing_class=tokenizer, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=checkpoint)
    extra = {"train_records": len(rows)}
    if eval_rows:
        extra.update({k: round(v, 4) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    return _finish(trainer, tokenizer, config, stage="sft", data_files=config.train_files + config.eval_files,
                   started=started, checkpoint=checkpoint, method=method, device=device, extra_metrics=extra)


# ---------------------------------------------------------------- DPO


def run_dpo(config: TrainConfig, *, resume: bool = True, callbacks: list | None = None) -> Path:
    """Continue from the SFT adapter; TRL keeps a frozen copy of it as the reference policy."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    started = time.time()
    if not (Path(config.sft_adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"SFT adapter not found: {config.sft_adapter} (no adapter_config.json)")
    rows = preference_rows(config.train_files)
    device = detect_device()
    method = resolve_method(config.method, device)
    bf16 = use_bf16(config.bf16, device)
    tokenizer = load_tokenizer(config.base_model)
    model = load_model(config.base_model, method=method, device=device, bf16=bf16)
    model = PeftModel.from_pretrained(model, config.sft_adapter, is_trainable=True)
    model = with_speedups(model, config, device)
    checkpoint = _prepare_run(config, resume)
    args = DPOConfig(beta=config.beta, **common_args(config, device, bf16))
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=checkpoint)
    # DPO keeps a "ref" adapter next to "default"; publish only the trained one, under the default name.
    if "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")
    reward_logs = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    extra = {"train_records": len(rows), "sft_adapter": config.sft_adapter}
    if reward_logs:
        extra["rewards_accuracy_last"] = reward_logs[-1]["rewards/accuracies"]
        extra["rewards_margin_last"] = reward_logs[-1].get("rewards/margins")
    return _finish(trainer, tokenizer, config, stage="dpo", data_files=config.train_files, started=started,
                   checkpoint=checkpoint, method=method, device=device, extra_metrics=extra)


def run(config: TrainConfig, **kwargs) -> Path:
    try:
        return (run_dpo if config.stage == "dpo" else run_sft)(config, **kwargs)
    except DataError as exc:
        raise SystemExit(f"training data is invalid:\n{exc}") from None
