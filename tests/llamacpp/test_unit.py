"""The llama.cpp engine's pure parts: engine choice, the request's LoRA field, llama-server's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_server.device import GIB, Capabilities, GpuInfo
from llm_server.engine import choose_engine, vllm_cpu_memory_needed
from llm_server.llamacpp import adapter_fingerprint, llama_server_command, lora_for
from llm_server.settings import LLMServerSettings

WEIGHTS = 540 * 1024**2  # SmolLM2-135M in float32


def caps(flags=("avx2",), available_gib=16.0, gpus=()) -> Capabilities:
    return Capabilities(cpu_count=2, cpu_flags=frozenset(flags), memory_total_bytes=int(24 * GIB),
                        memory_available_bytes=int(available_gib * GIB), gpus=tuple(gpus))


def test_auto_takes_vllm_on_a_gpu_even_without_avx512():
    choice = choose_engine("auto", caps(gpus=[GpuInfo("NVIDIA H200", 140 * GIB, (9, 0))]), WEIGHTS)
    assert choice.engine == "vllm" and "GPU" in choice.reason and "H200" in choice.reason


def test_auto_takes_vllm_cpu_with_avx512_and_enough_memory():
    choice = choose_engine("auto", caps(flags=("avx2", "avx512f"), available_gib=16), WEIGHTS)
    assert choice.engine == "vllm" and "vLLM-CPU" in choice.reason


def test_auto_takes_llamacpp_without_avx512():
    choice = choose_engine("auto", caps(flags=("avx2", "fma")), WEIGHTS)
    assert choice.engine == "llamacpp" and "no AVX-512" in choice.reason


def test_auto_takes_llamacpp_when_memory_is_short_even_with_avx512():
    needed = vllm_cpu_memory_needed(WEIGHTS)
    short = caps(flags=("avx512f",), available_gib=needed / GIB - 0.5)
    enough = caps(flags=("avx512f",), available_gib=needed / GIB + 0.5)
    assert choose_engine("auto", short, WEIGHTS).engine == "llamacpp"
    assert "GiB available" in choose_engine("auto", short, WEIGHTS).reason
    assert choose_engine("auto", enough, WEIGHTS).engine == "vllm"


@pytest.mark.parametrize("requested", ["vllm", "llamacpp"])
def test_an_explicit_engine_wins_over_detection(requested):
    gpu = caps(gpus=[GpuInfo("A10", 24 * GIB)])
    assert choose_engine(requested, gpu, WEIGHTS).engine == requested
    assert choose_engine(requested.upper(), caps(), WEIGHTS).engine == requested


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="LLM_ENGINE"):
        choose_engine("tgi", caps(), WEIGHTS)
    with pytest.raises(ValueError):
        LLMServerSettings(LLM_ENGINE="tgi")


def test_lora_field_selects_the_named_adapter_and_resets_for_the_base_model():
    ids = {"peer-v1": 0, "coach-v2": 1}
    assert lora_for("peer-v1", "Base", ids) == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
    assert lora_for("coach-v2", "Base", ids) == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    # The base model (by name or none) sets every adapter to 0 explicitly: a slot keeps its last LoRA otherwise.
    assert lora_for("Base", "Base", ids) == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    assert lora_for(None, "Base", ids) == lora_for("", "Base", ids) == lora_for("Base", "Base", ids)
    assert lora_for("Base", "Base", {}) is None
    with pytest.raises(KeyError):
        lora_for("peer", "Base", ids)  # a family is resolved by ai_service, not here
    with pytest.raises(KeyError):
        lora_for("nosuch-v1", "Base", {})


def test_llama_server_command(tmp_path):
    settings = LLMServerSettings(LLAMACPP_PARALLEL=4, LLM_MAX_MODEL_LEN=2048, LLAMACPP_EXTRA_ARGS="--flash-attn on",
                                 LLM_SERVED_MODEL_NAME="SmolLM2-135M-Instruct")
    argv, reasons = llama_server_command(settings, Path("/bin/llama-server"), Path("/m/model.gguf"),
                                         [Path("/a/peer.gguf"), Path("/a/coach.gguf")], 9999, "secret", caps(), 8192)
    joined = " ".join(argv)
    assert argv[0] == "/bin/llama-server"
    assert "--model /m/model.gguf" in joined and "--alias SmolLM2-135M-Instruct" in joined
    assert "--host 127.0.0.1 --port 9999" in joined and "--api-key secret" in joined
    assert "--parallel 4 --ctx-size 8192" in joined  # 4 slots of 2048 tokens
    assert "--lora /a/peer.gguf --lora /a/coach.gguf" in joined and "--lora-init-without-apply" in argv
    assert "--threads 2" in joined and argv[-2:] == ["--flash-attn", "on"]
    assert any("4 slots" in r for r in reasons)
    no_adapters, _ = llama_server_command(LLMServerSettings(), Path("/b"), Path("/m.gguf"), [], 1, "k", caps(), 8192)
    assert "--lora" not in no_adapters and "--lora-init-without-apply" not in no_adapters
    assert "--ctx-size 32768" in " ".join(no_adapters)  # default: 8 slots of min(8192, 4096)


def test_adapter_fingerprint_follows_the_weights(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 8}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights-1")
    first = adapter_fingerprint(tmp_path)
    assert first == adapter_fingerprint(tmp_path) and len(first) == 16
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights-2")
    assert adapter_fingerprint(tmp_path) != first


def test_an_adapter_no_longer_served_is_unknown_but_still_reset_for_other_requests():
    held = {"peer-v1": 0, "probe-v2": 1}
    with pytest.raises(KeyError):
        lora_for("probe-v2", "Base", held, served={"peer-v1"})
    # probe-v2 stays in llama-server's memory after an unload: still set to 0 explicitly.
    assert lora_for("peer-v1", "Base", held, served={"peer-v1"}) == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
    assert lora_for("Base", "Base", held, served=set()) == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]


def test_llamacpp_load_is_also_published_under_vllm_metric_names():
    from llm_server.llamacpp import vllm_named_metrics

    text = vllm_named_metrics("# HELP x\nllamacpp:requests_processing 3\nllamacpp:requests_deferred 2\n", "M", 4)
    assert 'vllm:num_requests_running{model_name="M"} 3\n' in text
    assert 'vllm:num_requests_waiting{model_name="M"} 2\n' in text
    assert 'vllm:kv_cache_usage_perc{model_name="M"} 0.75\n' in text
    assert 'vllm:num_requests_running{model_name="M"} 0\n' in vllm_named_metrics("", "M", 4)


def test_llama_server_waits_passively_unless_told_otherwise():
    from llm_server.llamacpp import llama_server_environment

    assert llama_server_environment({})["OMP_WAIT_POLICY"] == "PASSIVE"
    assert llama_server_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
