"""The chain on the real embedded model, a few steps each: SFT -> resume -> predict -> evaluate -> merge, DPO."""

import json
from pathlib import Path

import pytest

from tests.training.conftest import SAMPLES, tiny_config
from training import manifest
from training.cli import main
from training.train import run_dpo, run_sft


class Interrupt(Exception):
    pass


def interrupt_at(step):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # step `step` is done and saved
            if state.global_step == step:
                raise Interrupt(f"simulated crash after step {step}")

    return Stop()


@pytest.fixture(scope="module")
def sft_adapter(base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "adapter"
    config = tiny_config(base_model, out, max_steps=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOG_DIR", str(out.parent / "logs"))
        with pytest.raises(Interrupt):  # a run killed after step 2 (checkpoint-2 saved)...
            run_sft(config, callbacks=[interrupt_at(2)])
        assert not out.exists()
        run_sft(config)  # ...picks up from there
    return out


def test_sft_writes_adapter_and_manifest(sft_adapter, base_model):
    for name in ("adapter_config.json", "adapter_model.safetensors", "manifest.json", "tokenizer_config.json"):
        assert (sft_adapter / name).exists(), name
    data = manifest.read(sft_adapter)
    assert data["base_model"] == base_model and data["stage"] == "sft"
    assert data["data"][0]["sha256"] and data["config"]["lora_r"] == 8
    assert data["metrics"]["global_step"] == 3 and data["metrics"]["steps_per_s"] > 0
    assert data["resumed_from"].endswith("checkpoint-2")
    assert data["metrics"]["train_loss_last"] is not None
    assert list((sft_adapter.parent / "adapter.checkpoints").glob("checkpoint-*"))


def test_tensorboard_events_under_log_dir(sft_adapter):
    log_dir = manifest.read(sft_adapter)["log_dir"]
    assert log_dir == str(sft_adapter.parent / "logs" / "sft_tiny")
    assert list(Path(log_dir).rglob("events.out.tfevents*"))


def test_predict_evaluate_merge(sft_adapter, base_model, tmp_path):
    predictions, report = tmp_path / "pred.jsonl", tmp_path / "eval.json"
    assert main(["predict", "--eval", str(SAMPLES / "benchmark.jsonl"), "--output", str(predictions),
                 "--base-model", base_model, "--adapter", str(sft_adapter), "--max-new-tokens", "24",
                 "--limit", "4"]) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 4 and all("prediction" in r for r in rows)
    assert main(["evaluate", "--predictions", str(predictions), "--output", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert {"tool", "rag"} <= set(scores["by_type"]) and "bleu" in scores["overall"]
    assert report.with_suffix(".md").read_text().startswith("# Evaluation")
    merged = tmp_path / "merged"
    assert main(["merge", "--base-model", base_model, "--adapter", str(sft_adapter), "--output", str(merged),
                 "--max-shard-size", "200MB"]) == 0
    assert len(list(merged.glob("*.safetensors"))) > 1 and (merged / "model.safetensors.index.json").exists()


def test_dpo_from_sft_adapter(sft_adapter, base_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    config = tiny_config(base_model, tmp_path / "dpo", stage="dpo", sft_adapter=str(sft_adapter),
                         train_files=[str(SAMPLES / "dpo_pairs.jsonl")], max_steps=2, save_steps=10)
    out = run_dpo(config)
    data = manifest.read(out)
    assert data["stage"] == "dpo" and data["metrics"]["global_step"] == 2
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_smoke_perplexity(base_model, tmp_path):
    metrics = tmp_path / "smoke.json"
    assert main(["smoke", "--base-model", base_model, "--eval", str(SAMPLES / "benchmark.jsonl"),
                 "--metrics", str(metrics), "--max-length", "128"]) == 0
    result = json.loads(metrics.read_text())
    assert 1 < result["eval"]["perplexity"] < 1000 and result["eval"]["records"] == 9
