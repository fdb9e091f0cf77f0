"""llm_server's pure parts: device -> engine arguments, adapter names and discovery, the vLLM
command line, and the model pull's refusal of a file whose checksum is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.adapters import (AdapterNameError, is_family, latest_by_family, latest_version, next_version,
                             parse_adapter_name)
from llm_server.adapters import discover_adapters
from llm_server.device import (GIB, Capabilities, GpuInfo, ModelFacts, engine_config, lora_rank_for, parse_cpu_flags,
                               parse_meminfo, parse_nvidia_smi)
from llm_server.pull import PullError, pull
from llm_server.serve import StartupError, model_facts, redact, vllm_command, vllm_environment
from llm_server.settings import LLMServerSettings

SMOL = ModelFacts(weight_bytes=270 * 1024**2, max_position_embeddings=8192, adapter_ranks=(8,))


def cpu(flags: str = "", available_gib: float = 20, count: int = 2) -> Capabilities:
    return Capabilities(cpu_count=count, cpu_flags=frozenset(flags.split()), memory_total_bytes=int(24 * GIB),
                        memory_available_bytes=int(available_gib * GIB))


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# ---------------------------------------------------------------- device -> engine arguments

def test_cpu_without_avx512_runs_float32_and_sizes_kv_cache_from_free_memory():
    config = engine_config(cpu("avx2 fma", available_gib=20), SMOL)
    assert arg(config.args, "--dtype") == "float32"
    assert "--enable-lora" in config.args and arg(config.args, "--max-lora-rank") == "16"
    # (20 GiB - 2 x weights - 2 GiB) / 4 -> 4 GiB
    assert config.env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert arg(config.args, "--max-model-len") == "4096"  # capped on CPU
    assert "--gpu-memory-utilization" not in config.args


def test_cpu_with_avx512_runs_bfloat16():
    assert arg(engine_config(cpu("avx2 avx512f avx512_bf16"), SMOL).args, "--dtype") == "bfloat16"


@pytest.mark.parametrize("available_gib, expected", [(1, "1"), (3, "1"), (200, "32")])
def test_cpu_kv_cache_stays_between_1_and_32_gib(available_gib, expected):
    assert engine_config(cpu(available_gib=available_gib), SMOL).env["VLLM_CPU_KVCACHE_SPACE"] == expected


def test_gpu_choices_follow_the_smallest_card():
    caps = Capabilities(2, frozenset(), 64 * GIB, 60 * GIB,
                        gpus=(GpuInfo("A10", 24 * GIB, (8, 6)), GpuInfo("T4", 16 * GIB, (7, 5))))
    config = engine_config(caps, SMOL)
    assert arg(config.args, "--dtype") == "float16"  # T4 has no bf16
    assert arg(config.args, "--gpu-memory-utilization") == "0.85"
    assert arg(config.args, "--tensor-parallel-size") == "2"
    assert arg(config.args, "--max-model-len") == "8192"
    assert "VLLM_CPU_KVCACHE_SPACE" not in config.env


def test_single_large_gpu_uses_bf16_and_no_tensor_parallel():
    caps = Capabilities(16, frozenset(), 128 * GIB, 120 * GIB, gpus=(GpuInfo("H100", 80 * GIB, (9, 0)),))
    config = engine_config(caps, SMOL)
    assert arg(config.args, "--dtype") == "bfloat16"
    assert arg(config.args, "--gpu-memory-utilization") == "0.90"
    assert "--tensor-parallel-size" not in config.args


def test_overrides_win_over_detection():
    config = engine_config(cpu("avx512f"), SMOL, max_model_len=1024, max_lora_rank=64, dtype="float32")
    assert arg(config.args, "--dtype") == "float32"
    assert arg(config.args, "--max-model-len") == "1024"
    assert arg(config.args, "--max-lora-rank") == "64"


def test_lora_rank_fits_the_largest_adapter():
    assert lora_rank_for(()) == 16
    assert lora_rank_for((8, 24)) == 32
    assert lora_rank_for((300,)) == 320
    with pytest.raises(ValueError, match="maximum"):
        lora_rank_for((1024,))


def test_parsers_read_proc_and_nvidia_smi_output():
    assert "avx512f" in parse_cpu_flags("processor : 0\nflags\t\t: fpu avx2 avx512f\n")
    assert parse_meminfo("MemTotal:  1024 kB\nMemAvailable: 512 kB\n") == (1024 * 1024, 512 * 1024)
    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 9.0\nbad line\n")
    assert gpus == (GpuInfo("NVIDIA H100 80GB HBM3", 81559 * 1024**2, (9, 0)),)


# ---------------------------------------------------------------- adapter names

def test_adapter_names_carry_family_and_version():
    assert parse_adapter_name("peer-v2").family == "peer" and parse_adapter_name("peer-v2").version == 2
    assert parse_adapter_name("essay-coach-v10").family == "essay-coach"
    for bad in ("peer", "Peer-v1", "peer-v", "peer-1", "-v1", "peer v1"):
        with pytest.raises(AdapterNameError):
            parse_adapter_name(bad)
    assert is_family("peer") and not is_family("peer-v1")


def test_latest_version_is_numeric_not_lexical():
    names = ["peer-v9", "peer-v10", "tutor-v1", "notes"]
    assert latest_version(names, "peer") == "peer-v10"
    assert latest_version(names, "missing") is None
    assert latest_by_family(names) == {"peer": "peer-v10", "tutor": "tutor-v1"}
    assert next_version(names, "peer") == "peer-v11" and next_version(names, "new") == "new-v1"


def _adapter(root: Path, name: str, rank: int = 8) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "base_model_name_or_path": "base"}))
    return path


def test_discovery_skips_half_written_and_misnamed_directories(tmp_path):
    _adapter(tmp_path, "peer-v1")
    _adapter(tmp_path, "peer-v2", rank=16)
    _adapter(tmp_path, ".peer-v3.tmp-123")  # a build in progress
    _adapter(tmp_path, "Not An Adapter")
    (tmp_path / "tutor-v1").mkdir()  # no adapter_config.json
    found = discover_adapters(tmp_path)
    assert [(a.name, a.rank) for a in found] == [("peer-v1", 8), ("peer-v2", 16)]
    assert discover_adapters(tmp_path / "missing") == []


# ---------------------------------------------------------------- the vLLM command line

def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    return model


def test_vllm_command_serves_the_model_with_every_adapter_and_the_api_key(tmp_path, monkeypatch):
    model = _model(tmp_path)
    adapters_dir = tmp_path / "adapters"
    _adapter(adapters_dir, "peer-v1")
    _adapter(adapters_dir, "tutor-v2", rank=32)
    monkeypatch.setenv("LLM_MODEL_PATH", str(model))
    monkeypatch.setenv("LLM_ADAPTERS_DIR", str(adapters_dir))
    monkeypatch.setenv("LLM_API_KEY_LOCAL", "secret-key")
    monkeypatch.setenv("VLLM_PORT", "8123")
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--enforce-eager --seed 3")
    settings = LLMServerSettings(_env_file=None)
    adapters = discover_adapters(adapters_dir)
    facts = model_facts(model, adapters)
    assert facts.weight_bytes == 1000 and facts.adapter_ranks == (8, 32)
    engine = engine_config(cpu(), facts)
    argv = vllm_command(settings, "/venv/bin/python", engine, adapters)

    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert arg(argv, "--model") == str(model) and arg(argv, "--port") == "8123"
    assert arg(argv, "--served-model-name") == "SmolLM2-135M-Instruct"
    assert arg(argv, "--max-lora-rank") == "32"
    modules = argv[argv.index("--lora-modules") + 1: argv.index("--lora-modules") + 3]
    assert modules == [f"peer-v1={adapters_dir / 'peer-v1'}", f"tutor-v2={adapters_dir / 'tutor-v2'}"]
    assert arg(argv, "--api-key") == "secret-key"
    assert argv[-3:] == ["--enforce-eager", "--seed", "3"]
    assert "secret-key" not in redact(argv)

    env = vllm_environment({"VLLM_PORT": "8123", "VLLM_PYTHON": "x", "PATH": "/bin"}, engine)
    # vLLM reads VLLM_PORT as its own internal port: ours must not reach it.
    assert "VLLM_PORT" not in env and "VLLM_PYTHON" not in env and env["PATH"] == "/bin"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == engine.env["VLLM_CPU_KVCACHE_SPACE"]


def test_missing_model_is_a_startup_error_that_says_what_to_run(tmp_path):
    with pytest.raises(StartupError, match="llm_server pull"):
        model_facts(tmp_path / "nothing", [])


# ---------------------------------------------------------------- pull

def test_pull_refuses_a_file_whose_checksum_differs_and_writes_nothing(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF not really a model")
    home = tmp_path / "home"
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull(str(gguf), home, sha256="0" * 64, progress=lambda _: None)
    models = home / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_pull_of_a_missing_source_names_it(tmp_path):
    with pytest.raises(PullError, match="does not exist"):
        pull(str(tmp_path / "nope.gguf"), tmp_path, progress=lambda _: None)


def test_tool_calling_for_a_chatml_model_uses_hermes_and_the_bundled_template(monkeypatch):
    from llm_server.serve import BUNDLED_TOOLS_TEMPLATE, tool_calling_args

    smollm = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>{% endfor %}"
    args, why = tool_calling_args(LLMServerSettings(), smollm)
    assert args[:4] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--tool-strict-level"]
    assert args[-2:] == ["--chat-template", str(BUNDLED_TOOLS_TEMPLATE)] and BUNDLED_TOOLS_TEMPLATE.is_file()
    assert "hermes" in why
    # A ChatML template that already renders tools keeps its own template.
    args, _ = tool_calling_args(LLMServerSettings(), smollm + "{% if tools %}{{ tools }}{% endif %}")
    assert "--chat-template" not in args
    # An unknown template format: off, and the log says how to turn it on.
    args, why = tool_calling_args(LLMServerSettings(), "[INST] {{ messages }} [/INST]")
    assert args == [] and "LLM_TOOL_CALL_PARSER" in why
    monkeypatch.setenv("LLM_TOOL_CALL_PARSER", "none")
    assert tool_calling_args(LLMServerSettings(), smollm)[0] == []
    monkeypatch.setenv("LLM_TOOL_CALL_PARSER", "llama3_json")
    monkeypatch.setenv("LLM_CHAT_TEMPLATE", "/t.jinja")
    args, _ = tool_calling_args(LLMServerSettings(), "anything")
    assert args == ["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json", "--tool-strict-level",
                    "parameter", "--chat-template", "/t.jinja"]


def test_the_bundled_template_renders_plain_chats_like_the_models_own():
    import jinja2

    from llm_server.serve import BUNDLED_TOOLS_TEMPLATE

    env = jinja2.Environment()
    env.filters["tojson"] = lambda value: __import__("json").dumps(value)
    ours = env.from_string(BUNDLED_TOOLS_TEMPLATE.read_text())
    theirs = env.from_string(
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    for messages in ([{"role": "user", "content": "hi"}],
                     [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]):
        assert ours.render(messages=messages, add_generation_prompt=True) == \
            theirs.render(messages=messages, add_generation_prompt=True)
    rendered = ours.render(messages=[
        {"role": "user", "content": "find"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "found"}],
        tools=[{"type": "function", "function": {"name": "search"}}], add_generation_prompt=True)
    assert '<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>' in rendered
    assert "<tool_response>\nfound\n</tool_response>" in rendered and '"name": "search"' in rendered
