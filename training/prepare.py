"""prepare: create the data layout, install the shipped samples, convert and validate data.

Every write happens only after every input validated, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from training.dataspec import DataError, RECORD_TYPES, load_records, write_jsonl

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def data_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get("TRAINING_DATA_DIR", "data/training"))


def processed_files(root: Path) -> dict[str, Path]:
    return {kind: root / "processed" / f"{kind}_sft.jsonl" for kind in RECORD_TYPES}


def benchmark_file(root: Path) -> Path:
    return root / "eval" / "benchmark.jsonl"


def create_dirs(root: Path) -> list[Path]:
    dirs = [root / "raw", root / "processed", root / "eval",
            Path(os.environ.get("OUT_BASE", "outputs")), Path(os.environ.get("LOG_DIR", "runs"))]
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    return dirs


def create_samples(root: Path, samples: Path = SAMPLES_DIR) -> dict[str, int]:
    """Validate every shipped sample first, then write processed/{type}_sft.jsonl and eval/benchmark.jsonl."""
    plan = {processed_files(root)[kind]: (samples / f"{kind}_sft.jsonl", kind) for kind in RECORD_TYPES}
    plan[benchmark_file(root)] = (samples / "benchmark.jsonl", None)
    loaded = {target: load_records([source], default_type=kind) for target, (source, kind) in plan.items()}
    return {str(target): write_jsonl(target, records) for target, records in loaded.items()}


def convert(inputs: list[str], output: str, default_type: str | None = None) -> int:
    """ShareGPT / Alpaca / chat / prompt-response input -> one validated chat JSONL file."""
    return write_jsonl(output, load_records(inputs, default_type=default_type))


def validate(paths: list[str]) -> list[str]:
    """Problems as `file:line: what is wrong` (empty when everything is valid)."""
    missing = [f"{p}:0: file not found" for p in paths if not Path(p).is_file()]
    try:
        load_records([p for p in paths if Path(p).is_file()])
    except DataError as exc:
        return missing + [str(problem) for problem in exc.problems]
    return missing


def default_validation_targets(root: Path) -> list[str]:
    return [str(p) for p in list(processed_files(root).values()) + [benchmark_file(root)] if p.exists()]
