import json

import pytest
import yaml

from training.cli import main
from training.config import TrainConfig


def test_defaults_are_the_reference_recipe():
    c = TrainConfig()
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.learning_rate, c.num_epochs, c.warmup_ratio) == \
        (8, 32, 0.1, 2e-4, 1.0, 0.1)
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert c.max_length == 3072 and c.packing and c.gradient_checkpointing and c.bf16 == "auto" and c.speedups


def test_yaml_overrides_and_errors(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "lora_r": 16, "per_device_batch_size": 4}))
    c = TrainConfig.load(path, {"lora_r": 4})
    assert (c.lora_r, c.per_device_batch_size) == (4, 4)
    path.write_text("lora_rank: 8\n")
    with pytest.raises(ValueError, match="unknown config keys: lora_rank"):
        TrainConfig.load(path)
    with pytest.raises(ValueError, match="sft_adapter"):
        TrainConfig(stage="dpo").validate()
    monkeypatch.setenv("OUT_BASE", str(tmp_path / "o"))
    assert TrainConfig(name="n").adapter_dir() == tmp_path / "o" / "adapter_n"


def test_shipped_configs_load():
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "configs" / "training").glob("*.yaml"):
        TrainConfig.load(path)


def test_export_llamafactory_and_swift(tmp_path):
    out = tmp_path / "ex"
    assert main(["export-config", "--to", "llamafactory", "--out-dir", str(out), "--name", "n",
                 "--base-model", "meta-llama/Llama-3.1-8B-Instruct"]) == 0
    run = yaml.safe_load((out / "llamafactory_sft_n.yaml").read_text())
    assert run["template"] == "llama3" and run["lora_rank"] == 8 and run["cutoff_len"] == 3072
    assert run["lora_target"] == "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(run["dataset"].split(",")) == set(info)
    assert main(["export-config", "--to", "swift", "--out-dir", str(out), "--name", "n", "--batch-size", "6"]) == 0
    script = (out / "swift_sft_n.sh").read_text()
    assert "swift sft" in script and "--per_device_train_batch_size 6" in script and "--lora_alpha 32" in script


def test_qlora_falls_back_to_lora_without_gpu(capsys):
    from training.modeling import Device, resolve_method, use_bf16

    cpu = Device("cpu", bf16=False, can_4bit=False)
    assert resolve_method("qlora", cpu) == "lora"
    assert "QLoRA unavailable (no CUDA device)" in capsys.readouterr().out
    assert resolve_method("qlora", Device("cuda", True, True)) == "qlora"
    assert use_bf16("auto", cpu) is False and use_bf16("auto", Device("cuda", True, False)) is True
