"""Steps that run the model without training it: smoke (perplexity), predict, merge."""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.dataspec import load_records, split_prompt_reference, to_template_messages, write_jsonl
from training.modeling import load_for_inference, load_model, load_tokenizer


def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


# ---------------------------------------------------------------- smoke


def perplexity(model, tokenizer, records: list[dict], device: str, max_length: int) -> dict:
    """Token-weighted mean loss over whole conversations (chat template applied) -> perplexity."""
    import torch

    total_loss, total_tokens, truncated = 0.0, 0, 0
    for record in _progress(records, len(records), "perplexity"):
        ids = tokenizer.apply_chat_template(to_template_messages(record["messages"]), tokenize=True,
                                            return_dict=True)["input_ids"]
        truncated += len(ids) > max_length
        ids = torch.tensor([ids[:max_length]], device=device)
        with torch.inference_mode():
            loss = model(input_ids=ids, labels=ids).loss.item()
        tokens = ids.shape[1] - 1
        total_loss += loss * tokens
        total_tokens += tokens
    mean = total_loss / max(total_tokens, 1)
    return {"records": len(records), "tokens": total_tokens, "loss": round(mean, 4),
            "perplexity": round(math.exp(mean), 3), "truncated": truncated}


def smoke(base_model: str, train: list[str], eval_files: list[str], metrics_path: str | None,
          max_length: int = 1024, adapter: str | None = None) -> dict:
    """Quick data-path check before training: every file parses, the model loads, perplexity is finite."""
    train_records = load_records(train) if train else []
    eval_records = load_records(eval_files)
    model, tokenizer, device = load_for_inference(base_model, adapter)
    result = {"base_model": base_model, "adapter": adapter, "train_records": len(train_records),
              "eval": perplexity(model, tokenizer, eval_records, device.name, max_length)}
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


# ---------------------------------------------------------------- predict


def eval_rows(records: list[dict]) -> list[dict]:
    rows = []
    for record in records:
        prompt, reference = split_prompt_reference(record)
        rows.append({"id": record.get("id"), "type": record.get("type"),
                     "prompt": to_template_messages(prompt),
                     "reference": to_template_messages([reference])[0]["content"],
                     "reference_tool_calls": reference.get("tool_calls") or None})
    return rows


def generate_local(rows: list[dict], base_model: str, adapter: str | None, max_new_tokens: int) -> list[str]:
    import torch

    model, tokenizer, device = load_for_inference(base_model, adapter)
    outputs = []
    for row in _progress(rows, len(rows), "predict"):
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=True, return_tensors="pt")["input_ids"].to(device.name)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return outputs


def generate_remote(rows: list[dict], base_url: str, model: str, api_key: str, max_new_tokens: int) -> list[str]:
    """Through the platform's vLLM (OpenAI API); `model` is the base name or an adapter name like peer-v2."""
    import httpx

    outputs = []
    with httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"},
                      timeout=120) as client:
        for row in _progress(rows, len(rows), "predict"):
            response = client.post("/chat/completions", json={
                "model": model, "messages": row["prompt"], "temperature": 0, "max_tokens": max_new_tokens})
            response.raise_for_status()
            outputs.append((response.json()["choices"][0]["message"].get("content") or "").strip())
    return outputs


def predict(eval_files: list[str], output: str, *, base_model: str, adapter: str | None = None,
            vllm_url: str | None = None, model_name: str | None = None, api_key: str = "",
            max_new_tokens: int = 128, limit: int = 0) -> list[dict]:
    rows = eval_rows(load_records(eval_files))
    if limit:
        rows = rows[:limit]
    if vllm_url:
        predictions = generate_remote(rows, vllm_url, model_name or Path(base_model).name, api_key, max_new_tokens)
    else:
        predictions = generate_local(rows, base_model, adapter, max_new_tokens)
    for row, prediction in zip(rows, predictions):
        row["prediction"] = prediction
    write_jsonl(output, rows)
    return rows


# ---------------------------------------------------------------- merge


def merge(base_model: str, adapter: str, output: str, max_shard_size: str = "5GB") -> list[str]:
    """Adapter folded into the base weights: plain safetensors any engine can load, sharded."""
    from peft import PeftModel

    model = load_model(base_model)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_size)
    load_tokenizer(adapter if (Path(adapter) / "tokenizer_config.json").exists() else base_model).save_pretrained(str(out))
    return sorted(p.name for p in out.glob("*.safetensors"))
