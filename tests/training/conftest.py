"""Fixtures for the training tests: the embedded base model (skip when it is not pulled) and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.config import TrainConfig, default_base_model

SAMPLES = Path(__file__).resolve().parents[2] / "training" / "samples"


@pytest.fixture(scope="session")
def base_model() -> str:
    path = os.environ.get("TUTORSTACK_TEST_BASE_MODEL") or default_base_model()
    if not (Path(path) / "config.json").exists():
        pytest.skip(f"base model not found at {path}: run `python -m llm_server pull`")
    return path


def tiny_config(base_model: str, out: Path, **overrides) -> TrainConfig:
    """A few steps on a short sequence: seconds per step on 2 CPU cores."""
    values = dict(name="tiny", base_model=base_model, output_dir=str(out),
                  train_files=[str(SAMPLES / "style_sft.jsonl")], max_steps=2, per_device_batch_size=2,
                  gradient_accumulation_steps=1, max_length=128, packing=False, gradient_checkpointing=False,
                  logging_steps=1, save_steps=1, learning_rate=1e-3, warmup_ratio=0.0)
    values.update(overrides)
    return TrainConfig(**values)
