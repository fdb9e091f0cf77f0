"""The fast CPU LoRA path (llm_server/vllm_patches/fast_cpu_lora.py) computes what vLLM's punica
semantics say, token by token, on fresh random inputs: mixed adapters, no adapter (-1), slices."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm_server" / "vllm_patches"))
import fast_cpu_lora  # noqa: E402

from llm_server.serve import VLLM_PATCHES_DIR, cpu_lora_patch_env  # noqa: E402


def reference(y, x, a_stacked, b_stacked, scale, slices, indices):
    """vLLM's documented semantics: y[i, slice] += x[i] @ A[idx[i]].T @ B[idx[i]].T * scale, idx -1 = none."""
    out = y.clone()
    for i, slot in enumerate(indices.tolist()):
        if slot < 0:
            continue
        offset = 0
        for a, b, size in zip(a_stacked, b_stacked, slices):
            shrunk = (x[i].double() @ a[slot, 0].double().t()) * scale
            out[i, offset:offset + size] += (shrunk @ b[slot, 0].double().t()).to(y.dtype)
            offset += size
    return out


@pytest.mark.parametrize("pattern", ["one_adapter", "none", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_per_token_semantics(pattern, dtype):
    gen = torch.Generator().manual_seed(hash((pattern, str(dtype))) % 2**31)
    tokens, features, rank, max_loras, slices = 11, 48, 8, 3, (32, 16, 16)
    x = torch.randn(tokens, features, generator=gen).to(dtype)
    a = tuple(torch.randn(max_loras, 1, rank, features, generator=gen).to(dtype) for _ in slices)
    b = tuple(torch.randn(max_loras, 1, size, rank, generator=gen).to(dtype) for size in slices)
    indices = {"one_adapter": torch.full((tokens,), 1),
               "none": torch.full((tokens,), -1),
               "mixed": torch.randint(-1, max_loras, (tokens,), generator=gen)}[pattern]
    y = torch.randn(tokens, sum(slices), generator=gen).to(dtype)
    expected = reference(y, x, a, b, 0.5, slices, indices)
    fast_cpu_lora.add_lora_linear(y, x, a, b, 0.5, slices, indices)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    error = (y.double() - expected.double()).norm() / expected.double().norm()
    assert error < tolerance, f"relative error {error:.2e}"
    if pattern == "none":
        assert torch.equal(y, reference(y, x, a, b, 0.5, slices, indices))  # untouched


def test_token_groups():
    assert fast_cpu_lora.token_groups(torch.tensor([-1, -1])) == []
    assert fast_cpu_lora.token_groups(torch.tensor([2, 2, 2])) == [(2, None)]
    groups = fast_cpu_lora.token_groups(torch.tensor([0, -1, 2, 0]))
    assert [(slot, rows.tolist()) for slot, rows in groups] == [(0, [0, 3]), (2, [2])]


def test_patch_reaches_vllm_only_on_cpu():
    env = cpu_lora_patch_env({"PYTHONPATH": "/x"}, enabled=True, has_cuda=False)
    assert env["PYTHONPATH"].split(":") == [str(VLLM_PATCHES_DIR), "/x"]
    assert (VLLM_PATCHES_DIR / "sitecustomize.py").is_file()
    assert "PYTHONPATH" not in cpu_lora_patch_env({}, enabled=True, has_cuda=True)
    assert "PYTHONPATH" not in cpu_lora_patch_env({}, enabled=False, has_cuda=False)


def test_float32_copies_follow_vllm_writes():
    a = tuple([torch.randn(2, 1, 4, 8).bfloat16()])
    b = tuple([torch.randn(2, 1, 6, 4).bfloat16()])
    x, indices = torch.randn(3, 8).bfloat16(), torch.tensor([1, 1, 1])
    first = torch.zeros(3, 6, dtype=torch.bfloat16)
    fast_cpu_lora.add_lora_linear(first, x, a, b, 1.0, (6,), indices)
    a[0][1].copy_(torch.randn(1, 4, 8).bfloat16())  # vLLM loads another adapter into slot 1
    second = torch.zeros(3, 6, dtype=torch.bfloat16)
    fast_cpu_lora.add_lora_linear(second, x, a, b, 1.0, (6,), indices)
    assert torch.allclose(second.float(), reference(torch.zeros(3, 6, dtype=torch.bfloat16), x, a, b, 1.0, (6,),
                                                    indices).float(), rtol=3e-2, atol=3e-2)
    assert not torch.equal(first, second)
