"""`python -m training <step>`: one subcommand per pipeline step (see training/README.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml

from training import prepare as prep
from training.config import TrainConfig, default_base_model


def _train_config(args: argparse.Namespace, stage: str) -> TrainConfig:
    overrides = {
        "stage": stage, "name": args.name, "base_model": args.base_model, "train_files": args.train,
        "eval_files": args.eval, "output_dir": args.output_dir, "max_steps": args.max_steps,
        "per_device_batch_size": args.batch_size, "gradient_accumulation_steps": args.grad_accum,
        "max_length": args.max_length, "learning_rate": args.lr, "method": args.method,
        "sft_adapter": getattr(args, "sft_adapter", None),
    }
    for item in args.set or []:  # --set key=value, value parsed as YAML (numbers, booleans, lists)
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return TrainConfig.load(args.config, overrides)


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (defaults: the Llama-3.1-8B reference recipe)")
    parser.add_argument("--name")
    parser.add_argument("--base-model", help="HF id or local dir (default: the embedded SmolLM2)")
    parser.add_argument("--train", nargs="+", help="training JSONL files")
    parser.add_argument("--eval", nargs="+", help="eval JSONL files (eval loss in the manifest)")
    parser.add_argument("--output-dir")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int, help="per-device batch size")
    parser.add_argument("--grad-accum", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--method", choices=["lora", "qlora"])
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config field")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints instead of resuming")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="create dirs/samples, convert ShareGPT/Alpaca, validate")
    p.add_argument("--data-dir", help="default $TRAINING_DATA_DIR or data/training")
    p.add_argument("--create-dirs", action="store_true")
    p.add_argument("--create-samples", action="store_true")
    p.add_argument("--validate", nargs="*", metavar="FILE", help="validate files (default: the prepared ones)")
    p.add_argument("--input", nargs="+", help="files to convert (chat, ShareGPT, Alpaca, prompt/response)")
    p.add_argument("--output", help="converted chat JSONL")
    p.add_argument("--type", choices=["tool", "rag", "style"], help="type for records that have none")

    p = sub.add_parser("distill", help="chat JSONL -> clean prompt/response pairs + report")
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--report")
    p.add_argument("--near-threshold", type=float, default=0.85, help="Jaccard over character 5-grams")

    p = sub.add_parser("smoke", help="base-model perplexity on the eval set (data-path check)")
    p.add_argument("--base-model", default=None)
    p.add_argument("--adapter")
    p.add_argument("--train", nargs="*", default=[])
    p.add_argument("--eval", nargs="+", required=True)
    p.add_argument("--metrics")
    p.add_argument("--max-length", type=int, default=1024)

    for stage in ("sft", "dpo"):
        p = sub.add_parser(stage, help=f"{stage.upper()} LoRA training")
        _add_train_args(p)
        if stage == "dpo":
            p.add_argument("--sft-adapter", help="SFT adapter directory to continue from")

    p = sub.add_parser("predict", help="generate answers for the eval set")
    p.add_argument("--eval", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--base-model", default=None)
    p.add_argument("--adapter", help="in-process: adapter directory")
    p.add_argument("--vllm-url", help="through vLLM instead (OpenAI API base, e.g. http://localhost:8000/v1)")
    p.add_argument("--model", help="with --vllm-url: served model or adapter name (e.g. peer-v2)")
    p.add_argument("--api-key", default=None, help="default $LLM_API_KEY_LOCAL")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--limit", type=int, default=0)

    p = sub.add_parser("evaluate", help="BLEU/chrF/ROUGE-L/tool exact match by type -> JSON + Markdown "
                                        "(--safety: the red-team set, unsafe-output and over-refusal rates)")
    p.add_argument("--predictions", help="predict's output (required without --safety)")
    p.add_argument("--output", help="JSON path; the Markdown goes beside it (.md) "
                                     "(--safety default: bench/results/safety_eval.json)")
    p.add_argument("--title", default=None)
    from training.safety_eval import add_safety_args  # --safety and its options

    add_safety_args(p)

    p = sub.add_parser("merge", help="fold an adapter into the base weights (sharded safetensors)")
    p.add_argument("--base-model", default=None)
    p.add_argument("--adapter", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--max-shard-size", default="5GB")

    p = sub.add_parser("publish", help="copy an adapter in as <family>-v<N+1> and hot-load it")
    p.add_argument("--adapter", required=True)
    p.add_argument("--family", required=True)
    p.add_argument("--adapters-dir")
    p.add_argument("--control-url", help="llm_server control API (default $LLM_SERVER_URL)")
    p.add_argument("--no-load", action="store_true", help="only copy (server not running)")

    p = sub.add_parser("rollback", help="unload and retire the latest version of a family")
    p.add_argument("--family", required=True)
    p.add_argument("--adapters-dir")
    p.add_argument("--control-url")
    p.add_argument("--no-unload", action="store_true")

    p = sub.add_parser("export-config", help="LLaMA-Factory YAML or ms-swift command for the same run")
    p.add_argument("--to", required=True, choices=["llamafactory", "swift"])
    p.add_argument("--out-dir", default="outputs/export")
    p.add_argument("--stage", choices=["sft", "dpo"], default="sft")
    _add_train_args(p)
    p.add_argument("--sft-adapter")

    from training.loop import add_loop_parsers  # prefs export, loop, cpt (the feedback loop)

    add_loop_parsers(sub)
    return parser


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def cmd_prepare(args) -> int:
    root = prep.data_dir(args.data_dir)
    did_something = False
    if args.create_dirs:
        for directory in prep.create_dirs(root):
            print(f"dir  {directory}")
        did_something = True
    try:
        if args.create_samples:
            for path, count in prep.create_samples(root).items():
                print(f"wrote {path} ({count} records)")
            did_something = True
        if args.input:
            if not args.output:
                print("prepare --input needs --output", file=sys.stderr)
                return 2
            print(f"wrote {args.output} ({prep.convert(args.input, args.output, args.type)} records)")
            did_something = True
    except prep.DataError as exc:
        print(f"{len(exc.problems)} problem(s); nothing written:\n{exc}", file=sys.stderr)
        return 1
    if args.validate is not None:
        targets = args.validate or prep.default_validation_targets(root)
        if not targets:
            print(f"nothing to validate under {root} (run prepare --create-samples first)", file=sys.stderr)
            return 1
        problems = prep.validate(targets)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s) in {len(targets)} file(s)", file=sys.stderr)
            return 1
        print(f"ok: {len(targets)} file(s) valid")
        did_something = True
    if not did_something:
        print("nothing to do: pass --create-dirs, --create-samples, --input/--output or --validate", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    command = args.command
    if command == "prepare":
        return cmd_prepare(args)
    if command == "distill":
        from training.distill import run

        _print(run(args.input, args.output, args.report, args.near_threshold))
        return 0
    if command == "smoke":
        from training.infer import smoke

        _print(smoke(args.base_model or default_base_model(), args.train, args.eval, args.metrics, args.max_length,
                     args.adapter))
        return 0
    if command in ("sft", "dpo"):
        from training.train import run

        run(_train_config(args, command), resume=not args.fresh)
        return 0
    if command == "predict":
        import os

        from training.infer import predict

        rows = predict(args.eval, args.output, base_model=args.base_model or default_base_model(),
                       adapter=args.adapter, vllm_url=args.vllm_url, model_name=args.model,
                       api_key=args.api_key or os.environ.get("LLM_API_KEY_LOCAL", "dummy"),
                       max_new_tokens=args.max_new_tokens, limit=args.limit)
        print(f"wrote {args.output} ({len(rows)} predictions)")
        return 0
    if command == "evaluate" and args.safety:
        from training.safety_eval import run_safety_command

        return run_safety_command(args)
    if command == "evaluate":
        if not args.predictions or not args.output:
            print("evaluate needs --predictions and --output (or --safety)", file=sys.stderr)
            return 2
        args.title = args.title or "Evaluation"
        from training.dataspec import read_jsonl
        from training.metrics import to_markdown, write_report

        rows = [obj for _, obj, error in read_jsonl(args.predictions) if not error]
        report = write_report(rows, args.output, title=args.title)
        print(to_markdown(report, args.title))
        return 0
    if command == "merge":
        from training.infer import merge

        _print({"output": args.output, "shards": merge(args.base_model or default_base_model(), args.adapter,
                                                        args.output, args.max_shard_size)})
        return 0
    if command == "publish":
        from training.publish import publish

        _print(publish(args.adapter, args.family, directory=args.adapters_dir, url=args.control_url,
                       load=not args.no_load))
        return 0
    if command == "rollback":
        from training.publish import rollback

        _print(rollback(args.family, directory=args.adapters_dir, url=args.control_url, unload=not args.no_unload))
        return 0
    if command == "export-config":
        from training.interop import export

        for path in export(_train_config(args, args.stage), args.to, args.out_dir):
            print(f"wrote {path}")
        return 0
    if command in ("prefs", "loop", "cpt"):
        from training.loop import run_loop_command

        return run_loop_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
