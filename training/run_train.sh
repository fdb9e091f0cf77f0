#!/usr/bin/env bash
# One command for the whole pipeline on one data type (or all of them):
#   training/run_train.sh sample|tool|rag|style|all
# sample: the shipped samples, end to end (prepare -> validate -> distill -> smoke -> sft -> predict -> evaluate)
# tool|rag|style: the same with SFT on that type's file only
# all: SFT on every type, then DPO on the preference pairs, then predict/evaluate the DPO adapter
# Environment: PYTHON, BASE_MODEL (HF id or dir; default the pulled SmolLM2), CONFIG (default the CPU config),
#   MAX_STEPS (default 30 for sample/tool/rag/style, unset = full epochs for all), OUT_BASE, LOG_DIR,
#   TRAINING_DATA_DIR, PUBLISH_FAMILY (publish the final adapter as <family>-v<N> and hot-load it).
set -euo pipefail

target="${1:-sample}"
case "$target" in sample|tool|rag|style|all) ;; *) echo "usage: $0 sample|tool|rag|style|all" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-${TUTORSTACK_HOME:-$HOME/.cache/tutorstack}/venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
DATA="${TRAINING_DATA_DIR:-data/training}"
CONFIG="${CONFIG:-configs/training/sft_smollm2_cpu.yaml}"
OUT="${OUT_BASE:-outputs}"
REPORTS="$OUT/reports/$target"
mkdir -p "$REPORTS"
base_args=()
[ -n "${BASE_MODEL:-}" ] && base_args=(--base-model "$BASE_MODEL")
steps=()
if [ "$target" != all ]; then steps=(--max-steps "${MAX_STEPS:-30}"); elif [ -n "${MAX_STEPS:-}" ]; then steps=(--max-steps "$MAX_STEPS"); fi
training() { echo "+ python -m training $*" >&2; "$PYTHON" -m training "$@"; }

training prepare --data-dir "$DATA" --create-dirs --create-samples
training prepare --data-dir "$DATA" --validate

case "$target" in
  sample|all) train_files=("$DATA"/processed/{tool,rag,style}_sft.jsonl) ;;
  *) train_files=("$DATA/processed/${target}_sft.jsonl") ;;
esac
training distill --input "${train_files[@]}" --output "$DATA/processed/${target}_distilled.jsonl" \
  --report "$REPORTS/distill_report.json"
training smoke "${base_args[@]}" --train "$DATA/processed/${target}_distilled.jsonl" \
  --eval "$DATA/eval/benchmark.jsonl" --metrics "$REPORTS/smoke_metrics.json" --max-length 512

training sft --config "$CONFIG" --name "$target" "${base_args[@]}" "${steps[@]}" \
  --train "$DATA/processed/${target}_distilled.jsonl" --eval "$DATA/eval/benchmark.jsonl"
adapter_dir() { if [ -n "${OUT_BASE:-}" ]; then echo "$OUT_BASE/adapter_$1"; else echo "outputs/adapter/$1"; fi; }
final="$(adapter_dir "$target")"

if [ "$target" = all ]; then
  training dpo --config configs/training/dpo_smollm2_cpu.yaml --name all-dpo "${base_args[@]}" "${steps[@]}" \
    --sft-adapter "$final"
  final="$(adapter_dir all-dpo)"
fi

training predict "${base_args[@]}" --adapter "$final" --eval "$DATA/eval/benchmark.jsonl" \
  --output "$REPORTS/predictions.jsonl" --max-new-tokens 96
training evaluate --predictions "$REPORTS/predictions.jsonl" --output "$REPORTS/eval.json" --title "Evaluation: $target"

if [ -n "${PUBLISH_FAMILY:-}" ]; then
  training publish --adapter "$final" --family "$PUBLISH_FAMILY"
fi
echo "adapter: $final   reports: $REPORTS"
