"""`python -m llm_server build-sample-adapter`: a real LoRA adapter for the embedded model.

A short, seeded LoRA run (r=8, alpha 16, every linear layer) on the repo's small sample dataset
data/samples/adapter/peer_sft.jsonl, in the voice of a friendly peer writing buddy (every reply
opens with "Hey!" and ends with an encouraging sign-off), so its output visibly differs from the
base model's. A plain PyTorch loop rather than a trainer: a few dozen steps need nothing more,
and it stays fast on 2 CPU cores. The full training pipeline lives in training/.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from common.adapters import parse_adapter_name
from llm_server.fsutil import atomic_directory
from llm_server.settings import DEFAULT_MODEL_NAME, LLMServerSettings

DATASET = Path(__file__).resolve().parents[1] / "data" / "samples" / "adapter" / "peer_sft.jsonl"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRAINING_RECORD = "tutorstack-adapter.json"


def progress(line: str) -> None:
    print(f"[adapter] {line}", file=sys.stderr, flush=True)


def build_sample_adapter(settings: LLMServerSettings, name: str = "peer-v1", *, force: bool = False,
                         steps: int = 20, batch_size: int = 8, learning_rate: float = 3e-3, seed: int = 0,
                         dataset: Path = DATASET) -> Path:
    parse_adapter_name(name)  # refuse names the registry could not version
    target = settings.resolved_adapters_dir / name
    if not force and (target / "adapter_config.json").is_file() and (target / "adapter_model.safetensors").is_file():
        progress(f"{name}: cached at {target}")
        return target
    base = settings.resolved_model_path
    if not (base / "config.json").is_file():
        if settings.model_path:
            raise FileNotFoundError(f"base model {base} not found (LLM_MODEL_PATH)")
        from llm_server.pull import pull

        pull(None, settings.home)

    started = time.monotonic()
    import torch  # heavy imports only when training
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    examples = _tokenize(tokenizer, _read_records(dataset))
    progress(f"training {name}: {len(examples)} records, {steps} steps of {batch_size}, "
             f"{model.get_nb_trainable_parameters()[0]:,} trainable parameters, base {base.name}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)  # linear decay
    order = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for step in range(steps):
        indices = torch.randint(len(examples), (batch_size,), generator=order).tolist()
        input_ids, labels, attention = _collate([examples[i] for i in indices], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        if step % 5 == 0 or step == steps - 1:
            progress(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.monotonic() - started:.0f}s)")

    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        # Where it came from, so a published adapter can be traced to data and settings.
        record = {"name": name, "base_model": DEFAULT_MODEL_NAME if not settings.model_path else str(base),
                  "dataset": str(dataset.relative_to(DATASET.parents[3])) if dataset == DATASET else str(dataset),
                  "dataset_sha256": hashlib.sha256(dataset.read_bytes()).hexdigest(),
                  "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": LORA_TARGETS},
                  "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                  "losses": losses, "seconds": round(time.monotonic() - started, 1)}
        (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    progress(f"{name}: saved to {target} in {time.monotonic() - started:.0f}s (loss {losses[0]} -> {losses[-1]})")
    return target


def _read_records(path: Path) -> list[list[dict]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            messages = json.loads(line)["messages"]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError(f"{path}:{number}: the last message must be the assistant's reply")
            records.append(messages)
    return records


def _tokenize(tokenizer, records: list[list[dict]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per record; only the assistant reply is learned (prompt labels are -100)."""
    examples = []
    for messages in records:
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(messages[-1]["content"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids))
    return examples


def _collate(batch, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention
