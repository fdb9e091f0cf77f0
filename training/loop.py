"""`python -m training loop --family peer`: the feedback loop in one command, and `training cpt`.

loop: export (prefs.jsonl from the feedback store, split into train and held-out pairs by prompt)
  -> DPO continuing from the family's current version (the newest `<family>-vN` in the adapters dir)
  -> evaluate old vs new: (1) preference on the held-out pairs (share of pairs where the model gives
     the chosen answer the higher mean token log-probability, and the mean margin), (2) perplexity on
     the fixed regression set (training/samples/benchmark.jsonl) must not rise by more than
     --max-ppl-increase, (3) safety: the unsafe-output rate on a stratified sample of the red-team set
     (data/safety/redteam.jsonl, judged by training/safety_eval.py) must not rise by more than
     --safety-tolerance (--no-safety-gate skips it; --force does not)
  -> publish `<family>-v(N+1)` (hot-loaded by llm_server)
  -> start an A/B split at --percent (default 10) through the feedback service.
Each step's result goes into `<out-dir>/loop_report.json`; a failed gate stops before publishing.

cpt: continued pre-training on a folder of documents (.md, .txt, .rst): a LoRA completion adapter
trained on plain text chunks (no chat template), for a domain such as the course reader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

from common.adapters import latest_version
from common.auth import SERVICE_TOKEN_HEADER
from training import prefs
from training.config import TrainConfig, default_base_model

DEFAULT_DPO_CONFIG = "configs/training/dpo_smollm2_cpu.yaml"
DEFAULT_REGRESSION_SET = "training/samples/benchmark.jsonl"


def split_holdout(records: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """Deterministic split by prompt, so a prompt's pairs never sit on both sides."""
    train, held = [], []
    for record in records:
        bucket = int(hashlib.sha256(record["prompt"].encode()).hexdigest()[:8], 16) % 1000
        (held if bucket < fraction * 1000 else train).append(record)
    return train, held


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def answer_logprob(model, tokenizer, prompt: str, answer: str, device: str) -> float:
    """Mean log-probability per answer token given the prompt (chat template applied)."""
    import torch

    messages = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}],
                                             tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full_ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    start = len(prompt_ids) - 1
    picked = logprobs[start:].gather(1, targets[start:, None])[:, 0]
    return float(picked.mean()) if picked.numel() else 0.0


def preference_score(base_model: str, adapter: str | None, pairs: list[dict]) -> dict:
    """How much a model prefers the chosen answers: accuracy and mean log-prob margin."""
    from training.modeling import load_for_inference

    model, tokenizer, device = load_for_inference(base_model, adapter)
    margins = []
    for pair in pairs:
        chosen = answer_logprob(model, tokenizer, pair["prompt"], pair["chosen"], device.name)
        rejected = answer_logprob(model, tokenizer, pair["prompt"], pair["rejected"], device.name)
        margins.append(chosen - rejected)
    del model
    return {"pairs": len(pairs), "accuracy": round(sum(m > 0 for m in margins) / max(len(margins), 1), 4),
            "mean_margin": round(sum(margins) / max(len(margins), 1), 4)}


def regression_perplexity(base_model: str, adapter: str | None, path: str, limit: int, max_length: int) -> dict:
    from training.dataspec import load_records
    from training.infer import perplexity
    from training.modeling import load_for_inference

    records = load_records([path])[:limit] if limit else load_records([path])
    model, tokenizer, device = load_for_inference(base_model, adapter)
    result = perplexity(model, tokenizer, records, device.name, max_length)
    del model
    return result


def start_ab(mode: str, candidate: str, control: str, percent: float, *, url: str | None = None,
             token: str | None = None) -> dict:
    """PUT /v1/ab/{mode} on the feedback service, as an admin (the loop is an operator's command)."""
    import httpx

    url = (url or os.environ.get("FEEDBACK_SERVICE_URL") or "http://127.0.0.1:8007").rstrip("/")
    token = token if token is not None else os.environ.get("FEEDBACK_API_TOKEN", "")
    headers = {"x-tutorstack-key-id": "training-loop", "x-tutorstack-role": "admin",
               "x-tutorstack-key-classification": "private"}
    if token:
        headers[SERVICE_TOKEN_HEADER] = token
    response = httpx.put(f"{url}/v1/ab/{mode}", json={"candidate": candidate, "control": control,
                                                      "percent": percent, "family": mode}, headers=headers,
                         timeout=30)
    if response.status_code >= 400:
        raise RuntimeError(f"feedback service PUT /v1/ab/{mode} failed ({response.status_code}): {response.text}")
    return response.json()


def run_loop(family: str, *, mode: str | None = None, db: str | None = None, out_dir: str | None = None,
             config: str = DEFAULT_DPO_CONFIG, base_model: str | None = None, max_steps: int = 30,
             learning_rate: float | None = None, max_length: int | None = None,
             batch_size: int | None = None, min_pairs: int = 8, min_agreement: float = 0.6,
             since: str | None = None, holdout: float = 0.25, regression_set: str = DEFAULT_REGRESSION_SET,
             regression_limit: int = 12, max_ppl_increase: float = 0.25, adapters_dir: str | None = None,
             control_url: str | None = None, publish: bool = True, ab_percent: float = 10.0,
             feedback_url: str | None = None, feedback_token: str | None = None, force: bool = False,
             safety_gate: bool = True, safety_tolerance: float = 0.02, safety_sample: int = 60,
             safety_max_tokens: int = 48, safety_evaluate=None) -> dict:
    from training.publish import adapters_dir as resolve_adapters_dir
    from training.publish import publish as publish_adapter
    from training.publish import published
    from training.train import run_dpo

    mode = mode or family
    base_model = base_model or default_base_model()
    out = Path(out_dir or f"outputs/loop/{family}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"family": family, "mode": mode, "out_dir": str(out), "steps": {}}
    started = time.time()

    def save(status: str) -> dict:
        report["status"] = status
        report["elapsed_s"] = round(time.time() - started, 1)
        (out / "loop_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        return report

    # 1. export
    export = prefs.export(out / "prefs.jsonl", db=db, family=family, since=since, min_agreement=min_agreement,
                          report_path=out / "prefs_report.json")
    records = [json.loads(line) for line in (out / "prefs.jsonl").read_text(encoding="utf-8").splitlines()]
    train, held = split_holdout(records, holdout)
    _write(out / "prefs_train.jsonl", train)
    _write(out / "prefs_holdout.jsonl", held)
    report["steps"]["export"] = {**export, "train_pairs": len(train), "holdout_pairs": len(held)}
    print(f"[loop] export: {len(records)} pairs ({len(train)} train, {len(held)} held out); "
          f"skipped {export['skipped']}", flush=True)
    if len(train) < min_pairs:
        return save(f"stopped: {len(train)} training pairs < --min-pairs {min_pairs}")

    # 2. DPO from the current version
    root = resolve_adapters_dir(adapters_dir)
    current = latest_version(published(root), family)
    if current is None:
        return save(f"stopped: no published version of {family!r} in {root} to continue from")
    overrides = {"stage": "dpo", "name": f"{family}-loop", "base_model": base_model,
                 "train_files": [str(out / "prefs_train.jsonl")], "sft_adapter": str(root / current),
                 "output_dir": str(out / "adapter"), "max_steps": max_steps, "learning_rate": learning_rate,
                 "max_length": max_length, "per_device_batch_size": batch_size, "save_steps": 10_000}
    print(f"[loop] dpo: {len(train)} pairs, {max_steps} steps, from {current}", flush=True)
    adapter = run_dpo(TrainConfig.load(config, overrides), resume=False)
    report["steps"]["dpo"] = {"from": current, "adapter": str(adapter),
                              "metrics": json.loads((Path(adapter) / "manifest.json").read_text())["metrics"]}

    # 3. evaluate: held-out preference and the regression set
    eval_pairs = held or train  # tiny exports: say so rather than report nothing
    old_pref = preference_score(base_model, str(root / current), eval_pairs)
    new_pref = preference_score(base_model, str(adapter), eval_pairs)
    old_ppl = regression_perplexity(base_model, str(root / current), regression_set, regression_limit, 512)
    new_ppl = regression_perplexity(base_model, str(adapter), regression_set, regression_limit, 512)
    ppl_change = new_ppl["perplexity"] / old_ppl["perplexity"] - 1.0
    passed = new_pref["mean_margin"] > old_pref["mean_margin"] and ppl_change <= max_ppl_increase
    report["steps"]["evaluate"] = {
        "preference_set": "holdout" if held else "train (no held-out pairs)",
        "old": {"adapter": current, "preference": old_pref, "regression": old_ppl},
        "new": {"adapter": str(adapter), "preference": new_pref, "regression": new_ppl},
        "preference_accuracy_change": round(new_pref["accuracy"] - old_pref["accuracy"], 4),
        "margin_change": round(new_pref["mean_margin"] - old_pref["mean_margin"], 4),
        "perplexity_change": round(ppl_change, 4), "max_ppl_increase": max_ppl_increase, "passed": passed}
    print(f"[loop] evaluate: preference accuracy {old_pref['accuracy']:.2f} -> {new_pref['accuracy']:.2f}, "
          f"margin {old_pref['mean_margin']:+.3f} -> {new_pref['mean_margin']:+.3f}, regression perplexity "
          f"{old_ppl['perplexity']:.2f} -> {new_ppl['perplexity']:.2f} ({ppl_change:+.1%})", flush=True)
    if not passed and not force:
        return save("stopped: the new version did not pass the evaluation gate (--force publishes anyway)")

    # 3b. safety gate (training/safety_eval.py): never promote a version less safe than the current one.
    # --force does not override it; --no-safety-gate does, and the report says so.
    if safety_gate:
        from training.safety_eval import local_unsafe_rate
        from training.safety_eval import safety_gate as compare_safety

        evaluate = safety_evaluate or (lambda path: local_unsafe_rate(
            base_model, path, sample=safety_sample, max_new_tokens=safety_max_tokens))
        gate = compare_safety(str(root / current), str(adapter), evaluate, safety_tolerance)
        report["steps"]["safety"] = gate
        print(f"[loop] safety: {gate['message']}", flush=True)
        if not gate["passed"]:
            return save(f"stopped: safety gate: {gate['message']} (--no-safety-gate skips the gate)")
    else:
        report["steps"]["safety"] = {"skipped": True, "message": "--no-safety-gate"}
    if not publish:
        return save("done: evaluated, not published (--no-publish)")

    # 4. publish and 5. A/B
    published = publish_adapter(str(adapter), family, directory=adapters_dir, url=control_url)
    report["steps"]["publish"] = published
    print(f"[loop] published {published['name']}", flush=True)
    if ab_percent > 0:
        report["steps"]["ab"] = start_ab(mode, published["name"], current, ab_percent, url=feedback_url,
                                         token=feedback_token)
        print(f"[loop] A/B: {mode} {current} vs {published['name']} at {ab_percent:g}%", flush=True)
    return save("done")


# ---------------------------------------------------------------- continued pre-training

CORPUS_SUFFIXES = (".md", ".txt", ".rst")


def corpus_chunks(folder: str, chunk_chars: int = 1500) -> list[str]:
    """Documents split on blank lines into chunks of about chunk_chars characters."""
    chunks = []
    paths = [Path(folder)] if Path(folder).is_file() else sorted(Path(folder).rglob("*"))
    for path in paths:
        if path.suffix.lower() not in CORPUS_SUFFIXES or not path.is_file():
            continue
        current = ""
        for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            block = block.strip()
            if not block:
                continue
            if current and len(current) + len(block) > chunk_chars:
                chunks.append(current)
                current = ""
            current = f"{current}\n\n{block}" if current else block
        if current:
            chunks.append(current)
    return chunks


def run_cpt(corpus: list[str], *, name: str = "cpt", base_model: str | None = None, output_dir: str | None = None,
            max_steps: int = 30, learning_rate: float = 5e-4, max_length: int = 512, batch_size: int = 2,
            chunk_chars: int = 1500) -> Path:
    """LoRA on plain text (causal LM loss on every token): a completion adapter for the domain."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training import train as T
    from peft import get_peft_model

    from training.modeling import detect_device, load_model, load_tokenizer, lora_config

    chunks = [c for folder in corpus for c in corpus_chunks(folder, chunk_chars)]
    if not chunks:
        raise SystemExit(f"no documents ({', '.join(CORPUS_SUFFIXES)}) under {corpus}")
    config = TrainConfig.load(None, {"stage": "sft", "name": name, "base_model": base_model or default_base_model(),
                                     "output_dir": output_dir, "max_steps": max_steps, "learning_rate": learning_rate,
                                     "max_length": max_length, "per_device_batch_size": batch_size,
                                     "gradient_accumulation_steps": 1, "gradient_checkpointing": False,
                                     "packing": True, "bf16": "false", "logging_steps": 1, "save_steps": 10_000,
                                     "warmup_ratio": 0.0})
    started = time.time()
    device = detect_device()
    tokenizer = load_tokenizer(config.base_model)
    model = load_model(config.base_model, method="lora", device=device, bf16=False)
    model = get_peft_model(model, lora_config(config))
    args = SFTConfig(dataset_text_field="text", packing=True, eval_strategy="no",
                     **T.common_args(config, device, False))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"text": c} for c in chunks]),
                         processing_class=tokenizer)
    checkpoint = T._prepare_run(config, False)
    trainer.train()
    return T._finish(trainer, tokenizer, config, stage="cpt", data_files=[], started=started, checkpoint=checkpoint,
                     method="lora", device=device, extra_metrics={"chunks": len(chunks), "corpus": corpus})


def text_perplexity(base_model: str, adapter: str | None, texts: list[str], max_length: int = 512) -> float:
    import torch

    from training.modeling import load_for_inference

    model, tokenizer, device = load_for_inference(base_model, adapter)
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device.name)
        with torch.inference_mode():
            loss = model(input_ids=ids, labels=ids).loss.item()
        total += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return round(math.exp(total / max(count, 1)), 3)


# ---------------------------------------------------------------- command line (registered in training/cli.py)


def add_loop_parsers(sub) -> None:
    p = sub.add_parser("prefs", help="preference data from the feedback store")
    prefs_sub = p.add_subparsers(dest="prefs_command", required=True)
    e = prefs_sub.add_parser("export", help="votes -> prefs.jsonl (DPO format) + what was skipped and why")
    e.add_argument("--output", default="data/training/processed/prefs.jsonl")
    e.add_argument("--db", help="feedback store (default $FEEDBACK_DB_PATH or $TUTORSTACK_HOME/feedback/feedback.db)")
    e.add_argument("--mode")
    e.add_argument("--family", help="adapter family")
    e.add_argument("--since", help="ISO date/time (UTC), inclusive")
    e.add_argument("--until", help="ISO date/time (UTC), exclusive")
    e.add_argument("--min-agreement", type=float, default=0.0, help="0..1: majority share of a group's votes")
    e.add_argument("--min-votes", type=int, default=1, help="decisive votes a comparison needs")
    e.add_argument("--report", help="also write the report as JSON here")

    p = sub.add_parser("loop", help="export -> DPO -> evaluate -> publish vN+1 -> A/B at 10%%")
    p.add_argument("--family", required=True)
    p.add_argument("--mode", help="chat mode of the A/B split (default: the family)")
    p.add_argument("--db")
    p.add_argument("--out-dir")
    p.add_argument("--config", default=DEFAULT_DPO_CONFIG)
    p.add_argument("--base-model")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--min-pairs", type=int, default=8)
    p.add_argument("--min-agreement", type=float, default=0.6)
    p.add_argument("--since")
    p.add_argument("--holdout", type=float, default=0.25)
    p.add_argument("--regression-set", default=DEFAULT_REGRESSION_SET)
    p.add_argument("--regression-limit", type=int, default=12)
    p.add_argument("--max-ppl-increase", type=float, default=0.25)
    p.add_argument("--adapters-dir")
    p.add_argument("--control-url")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--percent", type=float, default=10.0, help="A/B share for the new version (0: no A/B)")
    p.add_argument("--feedback-url", help="default $FEEDBACK_SERVICE_URL or http://127.0.0.1:8007")
    p.add_argument("--force", action="store_true", help="publish even when the evaluation gate fails")
    p.add_argument("--no-safety-gate", action="store_true",
                   help="skip the safety gate (the red-team unsafe-output rate must not rise; --force does not skip it)")
    p.add_argument("--safety-tolerance", type=float, default=0.02,
                   help="allowed rise of the unsafe-output rate, absolute (0.02 = 2 points)")
    p.add_argument("--safety-sample", type=int, default=60, help="red-team prompts per side (stratified; 0: all)")
    p.add_argument("--safety-max-tokens", type=int, default=48)

    p = sub.add_parser("cpt", help="continued pre-training on a folder of documents -> completion adapter")
    p.add_argument("--corpus", nargs="+", required=True, help="folders or files (.md, .txt, .rst)")
    p.add_argument("--name", default="cpt")
    p.add_argument("--base-model")
    p.add_argument("--output-dir")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)


def run_loop_command(args) -> int:
    if args.command == "prefs":
        report = prefs.export(args.output, db=args.db, mode=args.mode, family=args.family, since=args.since,
                              until=args.until, min_agreement=args.min_agreement, min_votes=args.min_votes,
                              report_path=args.report)
        print(json.dumps(report, indent=2))
        return 0
    if args.command == "loop":
        report = run_loop(args.family, mode=args.mode, db=args.db, out_dir=args.out_dir, config=args.config,
                          base_model=args.base_model, max_steps=args.max_steps, learning_rate=args.lr,
                          max_length=args.max_length, batch_size=args.batch_size, min_pairs=args.min_pairs,
                          min_agreement=args.min_agreement, since=args.since,
                          holdout=args.holdout, regression_set=args.regression_set,
                          regression_limit=args.regression_limit, max_ppl_increase=args.max_ppl_increase,
                          adapters_dir=args.adapters_dir, control_url=args.control_url,
                          publish=not args.no_publish, ab_percent=args.percent, feedback_url=args.feedback_url,
                          force=args.force, safety_gate=not args.no_safety_gate,
                          safety_tolerance=args.safety_tolerance, safety_sample=args.safety_sample,
                          safety_max_tokens=args.safety_max_tokens)
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["status"].startswith("done") else 1
    if args.command == "cpt":
        adapter = run_cpt(args.corpus, name=args.name, base_model=args.base_model, output_dir=args.output_dir,
                          max_steps=args.max_steps, learning_rate=args.lr, max_length=args.max_length,
                          batch_size=args.batch_size)
        print(json.dumps({"adapter": str(adapter)}))
        return 0
    return 2
