"""GPU speed-ups for the SFT step, and helpers for padding-free packing.

``apply_speedups(model, device=..., enable=...)`` is what the SFT step calls after
loading the model (before or after ``peft.get_peft_model``: both work). On CUDA it
applies, each only where its library is importable, and logs what it did:

* **Liger kernels** (``liger-kernel``, LinkedIn's Triton kernels for LLM training):
  RMSNorm, SwiGLU MLP, RoPE and the *fused linear cross-entropy* (FLCE), which computes
  ``lm_head`` + cross-entropy chunk by chunk so the ``tokens x vocab`` logits (3072 x
  128256 per sequence for Llama-3.1, 1.5 GiB in fp32 each) are never materialised.
  The model's forward then returns ``logits=None`` while training with labels.
* **Fused LoRA linear** (this module, :func:`fuse_lora_linears`): replaces peft's
  vanilla LoRA forward ``base(x) + B(A(dropout(x))) * s`` - five kernels plus an fp32
  round trip of ``x`` and the output when peft keeps the adapters in fp32 - with one
  autograd function that adds the low-rank term inside the GEMM epilogue
  (``addmm_``) in the activation dtype, and computes the backward pass with the
  same trick. Identical maths (same dropout distribution, same scaling); adapter
  weights stay fp32 for the optimiser, their gradients are cast back to fp32.
* **Padding-free attention** (:func:`register_varlen_attention`): when the
  ``flash-attn`` package is absent, registers a transformers attention function
  ``"tutorstack_varlen"`` built on ``torch.nn.attention.varlen.varlen_attn`` (the
  FlashAttention-2 kernels that ship inside PyTorch), so a packed row (several
  sequences concatenated, ``position_ids`` restarting at 0 per sequence, or
  ``cu_seq_lens_q/k`` given) attends only within each sequence - no padding, no
  ``L x L`` mask. Non-packed batches fall back to SDPA, so it is always safe.
* **FP8 frozen base weights** (``fp8=True``, Ada/Hopper only, :func:`convert_frozen_linears_fp8`): the
  frozen weight of every LoRA-wrapped linear is stored as FP8 e4m3 with one scale per output row (the bf16
  copy is freed: half the weight memory), and its forward and input-gradient GEMMs run on FP8 tensor cores
  (``torch._scaled_mm``, row-wise scales; inputs and output gradients quantised on the fly by a fused
  Triton kernel). LoRA A/B, embeddings, norms and ``lm_head`` stay as they were. Changes the loss by FP8
  rounding (+0.08% on the 8B check), so it is its own switch.
  The input-gradient GEMM needs the FP8 weight transposed; a tiled Triton copy does it (:func:`transpose_fp8`).
* **Triton LoRA side path** (``lora_kernels=True``, the default, :class:`_TritonLoraLinear`): in-kernel
  dropout (Philox-4x32-10; no dropped copy of x or mask stored), FP8 quantisation shared by q/k/v and
  gate/up and fused with x A^T, streaming kernels for the LoRA output term and the backward. Without
  Triton (or off CUDA) the torch fused path below runs instead, with a log line.
* **cuDNN attention first** in SDPA's backend order (``cudnn_attention=True``).
* **Selective activation checkpointing** (``unchecked_layers``, :func:`set_selective_checkpointing`): the
  last N decoder layers keep their activations and skip the recompute; ``-1`` sizes N from a memory budget.
  ``saved_attention_layers`` (:func:`set_saved_attention_layers`): N more checkpointed layers keep only the
  attention op's outputs (torch's selective activation checkpointing), so their recompute skips the attention.
* :func:`chunked_token_logps` - per-token log-probs through ``lm_head`` chunk by chunk (for DPO), with the
  input gradient computed in the forward pass when ``lm_head`` is frozen.
* optionally ``torch.compile`` of each decoder layer (``compile_layers=True``). Off by
  default: measured on the H100 it gave nothing on top of the above (Liger's Triton
  kernels are not traceable by dynamo in torch 2.11 and fall back), and costs compile time.

Call it after ``get_peft_model`` so the LoRA layers exist to be fused (calling it
before is harmless: the Liger kernels and the attention are applied, the LoRA fusion
is then skipped; a second call after wrapping adds it). Measured effect (H100, Llama-3.1-8B
shape, LoRA r=8 on all linears, seq 3072, gradient checkpointing, batch 6):
1.48x the tokens/s of plain transformers+peft at 54% of its peak memory; on examples of
mixed lengths, where packing removes the padding, 2.38x at 51%
(``bench/bench_sft_gpu.py``, ``bench/results/sft_gpu_h100.md``). With FP8 on the H200 (issue 14):
1.79x at 38% of the baseline's memory, 2.51x at 34% on mixed lengths; DPO 1.70x / 2.41x; with the
Triton weight transpose 1.83x at 38%; with the Triton LoRA side path (the default since the third session,
Philox-10 dropout) 1.97-1.98x at 36% (1.99x with one unchecked layer), 2.54-2.83x mixed, DPO 1.86x
(``bench/results/sft_gpu_h200.md``, ``bench/results/dpo_gpu_h200.md``).

Packing helpers (padding-free, what the SFT step feeds the model):

* :func:`padding_free_collator` - transformers' ``DataCollatorWithFlattening``:
  concatenates the examples of a micro-batch into one row ``[1, total_tokens]``,
  ``position_ids`` restart at 0 for every example, the first label of every example
  is ``-100`` (no loss across the boundary), optional ``cu_seq_lens_q/k`` and
  ``max_length_q/k`` (FlashAttention varlen kwargs). No pad token is ever added.
* :func:`flatten_batch` - the same for tensors already on a device (used by the
  GPU bench): ``[B, L]`` rows (optionally with a 0/1 ``attention_mask``, padding
  dropped) -> one row with ``position_ids``, labels and ``cu_seq_lens``.
* :func:`packing_attn_implementation` - which ``attn_implementation`` to load the
  model with for packed batches: ``flash_attention_2`` when flash-attn is installed,
  else ``tutorstack_varlen`` when PyTorch has varlen attention on CUDA, else
  ``sdpa`` (transformers then builds a block-diagonal mask from ``position_ids``:
  correct, but it materialises an ``L x L`` mask).

On CPU, with ``enable=False``, or when nothing is importable, the model is returned
unchanged with a log line. Everything here is a no-op for correctness: the loss and
gradients are those of the plain model up to bf16 rounding.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import weakref
from types import MethodType
from typing import Any, Iterable, Sequence

import torch

log = logging.getLogger("training.speedups")

VARLEN_ATTN_NAME = "tutorstack_varlen"

__all__ = [
    "apply_speedups",
    "chunked_token_logps",
    "convert_frozen_linears_fp8",
    "fp8_available",
    "fuse_lora_linears",
    "set_selective_checkpointing",
    "set_saved_attention_layers",
    "flatten_batch",
    "liger_available",
    "packing_attn_implementation",
    "padding_free_collator",
    "register_varlen_attention",
    "varlen_available",
    "VARLEN_ATTN_NAME",
]


# --------------------------------------------------------------------------- helpers


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None and importlib.util.find_spec("triton") is not None


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def varlen_available() -> bool:
    """PyTorch's own FlashAttention varlen kernel (torch >= 2.9) on a CUDA device."""
    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention import varlen  # noqa: F401
    except Exception:
        return False
    return hasattr(varlen, "varlen_attn")


def _hf_model(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    if hasattr(model, "get_base_model"):
        try:
            return model.get_base_model()
        except Exception:  # pragma: no cover - odd wrappers
            pass
    return model


# ------------------------------------------------------------------- fused LoRA linear


class _FusedLoraLinear(torch.autograd.Function):
    """y = x W^T (+ b) + s * (drop(x) A^T) B^T with the LoRA term added in the GEMM epilogue.

    The frozen base weight gets no gradient; x, A and B do. Saved for backward: the
    dropped input (needed for dA anyway, as in peft), the rank-r projection and the
    dropout mask (bool).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, p: float):
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        dt = x2.dtype
        a = lora_a.to(dt)
        b = lora_b.to(dt)
        w = weight if weight.dtype == dt else weight.to(dt)
        out = torch.mm(x2, w.t())
        if bias is not None:
            out.add_(bias.to(dt))
        if p > 0.0:
            xd, mask = torch.native_dropout(x2, p, True)
        else:
            xd, mask = x2, None
        xa = torch.mm(xd, a.t())
        out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(weight, lora_a, lora_b, xd, xa, mask)
        ctx.scaling = scaling
        ctx.p = p
        ctx.in_shape = in_shape
        return out.view(*in_shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        weight, lora_a, lora_b, xd, xa, mask = ctx.saved_tensors
        s, p = ctx.scaling, ctx.p
        g = grad_out.reshape(-1, grad_out.shape[-1])
        dt = g.dtype
        if xd.dtype != dt:
            xd, xa = xd.to(dt), xa.to(dt)
        a = lora_a.to(dt)
        b = lora_b.to(dt)
        gx = ga = gb = None
        g_xa = torch.mm(g, b)  # [T, r], unscaled
        if ctx.needs_input_grad[4]:
            gb = torch.mm(g.t(), xa).mul_(s).to(lora_b.dtype)
        if ctx.needs_input_grad[3]:
            ga = torch.mm(g_xa.t(), xd).mul_(s).to(lora_a.dtype)
        if ctx.needs_input_grad[0]:
            w = weight if weight.dtype == dt else weight.to(dt)
            gx = torch.mm(g, w)
            if mask is None:
                gx.addmm_(g_xa, a, alpha=s)
            else:
                gx.add_(torch.mm(g_xa, a).mul_(mask), alpha=s / (1.0 - p))
            gx = gx.view(ctx.in_shape)
        return gx, None, None, ga, gb, None, None


def _fused_lora_forward(self, x, *args, **kwargs):
    """Replacement forward for a peft ``lora.Linear``; falls back to peft's own when unsure."""
    if args or kwargs or not self._tutorstack_fusable():
        return self._tutorstack_orig_forward(x, *args, **kwargs)
    name = self.active_adapters[0]
    drop = self.lora_dropout[name]
    p = float(drop.p) if isinstance(drop, torch.nn.Dropout) and self.training else 0.0
    base = self.base_layer
    if getattr(self, "_ts_lora_kernels", False) and (x.is_cuda or _interpreting()):
        xt = x.to(_autocast_dtype(x))
        if lora_kernel_fits(xt.reshape(-1, xt.shape[-1]), self.lora_A[name].weight.shape[0]):
            fp8 = hasattr(base, "_ts_fp8_w")
            with torch.autocast(x.device.type, enabled=False):
                return _TritonLoraLinear.apply(
                    xt, base._ts_fp8_w if fp8 else None, base._ts_fp8_scale if fp8 else None,
                    None if fp8 else base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                    float(self.scaling[name]), p,
                )
    if hasattr(base, "_ts_fp8_w") and x.is_cuda:
        with torch.autocast(x.device.type, enabled=False):
            return _FusedLoraFp8Linear.apply(
                x.to(_autocast_dtype(x)), base._ts_fp8_w, base._ts_fp8_scale, base.bias,
                self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]), p,
            )
    return _FusedLoraLinear.apply(
        x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]), p
    )


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def _fusable(self) -> bool:
    if self.disable_adapters or self.merged:
        return False
    active = [a for a in self.active_adapters if a in self.lora_A]
    if len(active) != 1:
        return False
    name = active[0]
    if name in getattr(self, "lora_variant", {}) or getattr(self, "use_dora", {}).get(name, False):
        return False
    base = self.base_layer
    if type(base) is not torch.nn.Linear:  # quantised (bnb 4/8-bit) or custom base layers keep peft's path
        return False
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return False
    if getattr(self, "fan_in_fan_out", False):
        return False
    drop = self.lora_dropout[name]
    return isinstance(drop, (torch.nn.Dropout, torch.nn.Identity))


def fuse_lora_linears(model, kernels: bool = False) -> int:
    """Patch every vanilla peft ``lora.Linear`` in ``model`` to the fused forward. Returns the count.

    ``kernels``: the LoRA side path (dropout included) runs in the Triton kernels of
    :class:`_TritonLoraLinear` where the input fits them (bf16/fp16, CUDA or Triton's interpreter).

    Works on any device (the CPU tests use it). Modules that are merged, disabled,
    have several active adapters, DoRA or other variants, or a trainable base weight
    keep peft's forward (checked at every call).
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except Exception:
        log.info("speedups: peft not importable; no LoRA fusion")
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, LoraLinear) and not hasattr(module, "_tutorstack_orig_forward"):
            module._tutorstack_orig_forward = module.forward
            module._tutorstack_fusable = MethodType(_fusable, module)
            module.forward = MethodType(_fused_lora_forward, module)
            n += 1
        if isinstance(module, LoraLinear) and hasattr(module, "_tutorstack_orig_forward"):
            module._ts_lora_kernels = bool(kernels)
    return n


# ------------------------------------------------------------ padding-free attention


def _cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    pos = position_ids.reshape(-1)
    starts = torch.nonzero(pos == 0, as_tuple=False).flatten()
    if starts.numel() == 0 or starts[0].item() != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    total = torch.tensor([pos.numel()], device=pos.device, dtype=starts.dtype)
    cu = torch.cat([starts, total]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max().item())
    return cu, max_len


_VARLEN_KW: dict[str, Any] | None = None
_UNIFORM_CACHE: list = [None, 0]  # [weakref to the last cu_seqlens tensor, its uniform length or 0]


def _uniform_length(cu: torch.Tensor) -> int:
    """Length shared by all sequences of ``cu`` (0 if they differ); one host sync per new tensor.

    The same ``cu_seq_lens`` tensor reaches every layer of a forward (and the checkpoint
    recompute), so the answer is cached against that tensor object (weakly: a new batch
    is a new object, never a stale hit).
    """
    ref = _UNIFORM_CACHE[0]
    if ref is not None and ref() is cu:
        return _UNIFORM_CACHE[1]
    lens = (cu[1:] - cu[:-1]).tolist()
    value = int(lens[0]) if lens and lens[0] > 0 and all(n == lens[0] for n in lens) else 0
    try:
        _UNIFORM_CACHE[0], _UNIFORM_CACHE[1] = weakref.ref(cu), value
    except TypeError:  # pragma: no cover
        pass
    return value


def _varlen_call(q, k, v, cu, max_len, scale):
    """q: [T, H, D], k/v: [T, Hkv, D] -> [T, H, D], causal within each sequence."""
    global _VARLEN_KW
    from torch.nn.attention.varlen import varlen_attn

    if _VARLEN_KW is None:
        params = inspect.signature(varlen_attn).parameters
        _VARLEN_KW = {"gqa": "enable_gqa" in params, "window": "window_size" in params, "causal": "is_causal" in params}
    kw: dict[str, Any] = {"scale": scale}
    if _VARLEN_KW["window"]:
        kw["window_size"] = (-1, 0)
    elif _VARLEN_KW["causal"]:
        kw["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if _VARLEN_KW["gqa"]:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)


def _packed_cu_seqlens(kwargs: dict, bsz: int):
    """cu_seq_lens of a packed row: from the collator's kwargs, else from restarting position_ids."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None or bsz != 1:
        return cu, kwargs.get("max_length_q")
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        return None, None
    ref = _POSITION_CACHE[0]
    if ref is not None and ref() is position_ids:
        cu, max_len = _POSITION_CACHE[1]
    else:
        cu, max_len = _cu_seqlens_from_position_ids(position_ids)
        try:
            _POSITION_CACHE[0], _POSITION_CACHE[1] = weakref.ref(position_ids), (cu, max_len)
        except TypeError:  # pragma: no cover
            pass
    if cu.numel() <= 2:  # a single sequence: nothing packed
        return None, None
    return cu, max_len


_POSITION_CACHE: list = [None, None]


def _drop_packing_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")}


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function for padding-free packed rows (registered as ``tutorstack_varlen``).

    query [B, H, L, D], key/value [B, Hkv, L, D]; returns ([B, L, H, D], None).

    * packed row (``cu_seq_lens_q`` given, or ``position_ids`` restarting) whose sequences all
      have the same length: reshaped to a [n, len] batch and run through SDPA's causal kernels
      (exact, and faster than the varlen kernel on Hopper);
    * packed row of mixed lengths on CUDA: PyTorch's FlashAttention-2 varlen kernel, causal
      within each sequence, no padding, no L x L mask;
    * anything else (ordinary batches, a 2-D padding mask, CPU without uniform lengths): SDPA.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bsz, n_heads, q_len, head_dim = query.shape
    packable = attention_mask is None and bsz == 1 and key.shape[2] == q_len
    cu, max_len = _packed_cu_seqlens(kwargs, bsz) if packable else (None, None)
    if cu is not None:
        n_seq = cu.numel() - 1
        if max_len is not None:
            # sum(len) == q_len and every len <= max_len: all equal iff n * max_len == q_len (no host sync)
            uniform = int(max_len) if n_seq > 0 and int(max_len) * n_seq == q_len else 0
        else:
            uniform = _uniform_length(cu)
        if uniform and q_len % uniform == 0:
            n_seq = q_len // uniform

            def as_batch(t):
                return t[0].transpose(0, 1).reshape(n_seq, uniform, t.shape[1], head_dim).transpose(1, 2)

            with _sdpa_context():
                out, _ = sdpa_attention_forward(
                    module, as_batch(query), as_batch(key), as_batch(value), None,
                    dropout=dropout, scaling=scaling, **_drop_packing_kwargs(kwargs),
                )  # [n, len, H, D]
            return out.reshape(1, q_len, n_heads, head_dim), None
        if query.is_cuda and dropout == 0.0 and query.dtype in (torch.float16, torch.bfloat16):
            if max_len is None:
                max_len = int((cu[1:] - cu[:-1]).max().item())
            q = query[0].transpose(0, 1)  # [L, H, D]
            k = key[0].transpose(0, 1)
            v = value[0].transpose(0, 1)
            out = _varlen_call(q, k, v, cu.to(torch.int32), int(max_len), scaling)
            return out.unsqueeze(0), None
        # mixed lengths where the varlen kernel can't run: block-diagonal causal mask for SDPA
        seq_id = torch.repeat_interleave(
            torch.arange(cu.numel() - 1, device=query.device), (cu[1:] - cu[:-1]).to(query.device).long()
        )
        causal = torch.ones(q_len, q_len, dtype=torch.bool, device=query.device).tril()
        attention_mask = (causal & (seq_id[:, None] == seq_id[None, :]))[None, None]
    elif attention_mask is not None and attention_mask.dim() == 2:
        # 2-D padding mask (flash-style mask function): causal 4-D bool mask for SDPA
        kv_len = key.shape[2]
        causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
        attention_mask = causal[None, None] & attention_mask[:, None, None, :].bool()
    with _sdpa_context():
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
            **_drop_packing_kwargs(kwargs),
        )


def register_varlen_attention() -> bool:
    """Register ``"tutorstack_varlen"`` with transformers' attention and mask interfaces."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except Exception as exc:  # pragma: no cover - very old transformers
        log.info("speedups: transformers has no AttentionInterface (%s)", exc)
        return False
    AttentionInterface.register(VARLEN_ATTN_NAME, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN_ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"])
    return True


def packing_attn_implementation(device: str = "cuda") -> str:
    """The attention implementation to load a model with for padding-free packed batches."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return "sdpa"
    if flash_attn_available():
        return "flash_attention_2"
    if varlen_available() and register_varlen_attention():
        return VARLEN_ATTN_NAME
    return "sdpa"


def _set_attn(model, name: str) -> bool:
    hf = _hf_model(model)
    try:
        if hasattr(hf, "set_attn_implementation"):
            hf.set_attn_implementation(name)
        else:  # pragma: no cover
            hf.config._attn_implementation = name
        return True
    except Exception as exc:
        log.info("speedups: could not switch attention to %s (%s)", name, exc)
        return False


# ------------------------------------------------------------------ packing helpers


def padding_free_collator(return_flash_attn_kwargs: bool = True, separator_id: int = -100):
    """transformers' ``DataCollatorWithFlattening``: one row per micro-batch, no padding.

    Features are dicts with ``input_ids`` (and optionally ``labels``). Returns
    ``input_ids``/``labels``/``position_ids`` of shape ``[1, total]`` and, with
    ``return_flash_attn_kwargs``, ``cu_seq_lens_q/k`` and ``max_length_q/k``.
    """
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_flash_attn_kwargs=return_flash_attn_kwargs, separator_id=separator_id)


def flatten_batch(
    input_ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    separator_id: int = -100,
) -> dict[str, Any]:
    """``[B, L]`` tensors (right or left padded per ``attention_mask``) -> one padding-free row.

    Returns ``input_ids``, ``labels`` (first token of each sequence = ``separator_id``),
    ``position_ids`` (restart at 0), ``cu_seq_lens_q/k`` (int32) and ``max_length_q/k``.
    """
    if labels is None:
        labels = input_ids
    if attention_mask is None:
        keep = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    ids = input_ids[keep]
    lab = labels[keep].clone()
    device = input_ids.device
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(lengths, 0).to(torch.int32)
    starts = cu[:-1].long()
    lab[starts[lengths > 0]] = separator_id
    seq_of_tok = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)
    position_ids = torch.arange(ids.numel(), device=device) - starts[seq_of_tok]
    max_len = int(lengths.max().item()) if lengths.numel() else 0
    return {
        "input_ids": ids.unsqueeze(0),
        "labels": lab.unsqueeze(0),
        "position_ids": position_ids.unsqueeze(0),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max_len,
        "max_length_k": max_len,
    }


# ------------------------------------------------------- FP8 frozen base weights (Hopper)


def fp8_available() -> bool:
    """FP8 tensor-core matmuls with row-wise scales: CUDA, compute capability >= 8.9, torch._scaled_mm, Triton."""
    if not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.get_device_capability() >= (8, 9)


_FP8_MAX = 448.0
_QUANT_KERNEL = None


def _quant_kernel():
    """Triton kernel: one program per row, y = x * colscale; scale = amax(|y|) / 448; q = fp8(y / scale)."""
    global _QUANT_KERNEL
    if _QUANT_KERNEL is None:
        import triton
        import triton.language as tl

        @triton.jit
        def _rowwise_fp8(x_ptr, col_ptr, q_ptr, s_ptr, n_cols, HAS_COL: tl.constexpr, BLOCK: tl.constexpr):
            row = tl.program_id(0).to(tl.int64)
            offs = tl.arange(0, BLOCK)
            m = offs < n_cols
            x = tl.load(x_ptr + row * n_cols + offs, mask=m, other=0.0).to(tl.float32)
            if HAS_COL:
                x = x * tl.load(col_ptr + offs, mask=m, other=0.0)
            amax = tl.max(tl.abs(x), axis=0)
            scale = tl.maximum(amax, 1e-12) / 448.0
            tl.store(q_ptr + row * n_cols + offs, (x / scale).to(q_ptr.dtype.element_ty), mask=m)
            tl.store(s_ptr + row, scale)

        _QUANT_KERNEL = _rowwise_fp8
    return _QUANT_KERNEL


def quantize_rowwise_fp8(x2: torch.Tensor, col_scale: torch.Tensor | None = None):
    """[M, K] (bf16/fp16/fp32, CUDA) -> (fp8 e4m3 [M, K], fp32 scales [M, 1]), rows scaled by their amax.

    ``col_scale`` ([K], fp32) multiplies the columns first (used to fold the weight's row scales into
    the output gradient). One fused Triton pass: read x once, write fp8 and one scale per row.
    """
    import triton

    x2 = x2.contiguous()
    m, k = x2.shape
    q = torch.empty((m, k), device=x2.device, dtype=torch.float8_e4m3fn)
    s = torch.empty((m, 1), device=x2.device, dtype=torch.float32)
    if m:
        block = triton.next_power_of_2(k)
        _quant_kernel()[(m,)](
            x2, col_scale if col_scale is not None else s, q, s, k,
            HAS_COL=col_scale is not None, BLOCK=block, num_warps=16 if block >= 8192 else 8,
        )
    return q, s


def _pad_rows(q: torch.Tensor, s: torch.Tensor, mult: int = 16):
    pad = (-q.shape[0]) % mult
    if not pad:
        return q, s, 0
    q = torch.cat([q, q.new_zeros((pad, q.shape[1]))])
    s = torch.cat([s, s.new_ones((pad, 1))])
    return q, s, pad


def _fp8_mm(x2: torch.Tensor, wq: torch.Tensor, w_scale_row: torch.Tensor, out_dtype) -> torch.Tensor:
    """x2 [T, K] @ dequant(wq [N, K], w_scale [1, N])^T -> [T, N] via FP8 tensor cores (row-wise scales)."""
    q, s = quantize_rowwise_fp8(x2)
    q, s, pad = _pad_rows(q, s)
    out = torch._scaled_mm(q, wq.t(), scale_a=s, scale_b=w_scale_row, out_dtype=out_dtype)
    return out[: out.shape[0] - pad] if pad else out


def _fp8_mm_grad_input(g: torch.Tensor, wq: torch.Tensor, w_scale_row: torch.Tensor) -> torch.Tensor:
    """g [T, N] @ dequant(W) [N, K] -> [T, K]: W's row scales are folded into g's columns first."""
    q, s = quantize_rowwise_fp8(g, w_scale_row.reshape(-1))
    q, s, pad = _pad_rows(q, s)
    wt = transpose_fp8(wq)  # [K, N] row-major, so wt.t() is the column-major [N, K] _scaled_mm wants
    ones = torch.ones((1, wq.shape[1]), device=g.device, dtype=torch.float32)
    out = torch._scaled_mm(q, wt.t(), scale_a=s, scale_b=ones, out_dtype=g.dtype)
    return out[: out.shape[0] - pad] if pad else out


class _Fp8FrozenLinear(torch.autograd.Function):
    """y = x dequant(Wq)^T + b for a frozen FP8 weight; gradient for x only (FP8 too)."""

    @staticmethod
    def forward(ctx, x, wq, w_scale, bias):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        out_dt = x2.dtype if x2.dtype != torch.float32 else torch.bfloat16
        cached = _cached_quant(x) if _QUANT_SHARING[0] else None
        if cached is None:
            q, s = quantize_rowwise_fp8(x2)
            if _QUANT_SHARING[0]:
                _store_quant(x, (q, s))
        else:  # a sibling projection (q/k/v, gate/up) already quantised this x
            q, s = cached
        q, s, pad = _pad_rows(q, s)
        out = torch._scaled_mm(q, wq.t(), scale_a=s, scale_b=w_scale, out_dtype=out_dt)
        out = out[: out.shape[0] - pad] if pad else out
        if bias is not None:
            out = out + bias.to(out.dtype)
        ctx.save_for_backward(wq, w_scale)
        ctx.in_shape = shape
        ctx.in_dtype = x.dtype
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        wq, w_scale = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        gx = None
        if ctx.needs_input_grad[0]:
            gx = _fp8_mm_grad_input(g, wq, w_scale).to(ctx.in_dtype).view(ctx.in_shape)
        return gx, None, None, None


def _autocast_dtype(x: torch.Tensor):
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16


def _fp8_linear_forward(self, x, *args, **kwargs):
    """Replacement forward of a frozen ``nn.Linear`` whose weight was converted to FP8."""
    with torch.autocast(x.device.type, enabled=False):
        return _Fp8FrozenLinear.apply(x.to(_autocast_dtype(x)), self._ts_fp8_w, self._ts_fp8_scale, self.bias)


@torch.no_grad()
def convert_frozen_linears_fp8(model) -> int:
    """Store the frozen base weight of every LoRA-wrapped ``nn.Linear`` as FP8 e4m3 with one scale per output row.

    The bf16 weight is freed (half the memory of the linear weights: 13 of the 15 GiB of an 8B
    model), and the layer then runs on FP8 tensor cores, forward and input-gradient, with the input
    (and the output gradient) quantised row-wise on the fly. LoRA A/B stay in bf16/fp32 and are
    untouched. Embeddings, norms and ``lm_head`` stay in bf16. Changes the numbers within FP8
    rounding (about 4% relative per matmul), so it is a switch (``fp8``), measured against the
    baseline's loss. Needs CUDA with compute capability >= 8.9 (Ada/Hopper).
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except Exception:
        return 0
    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear):
            continue
        base = module.base_layer
        if type(base) is not torch.nn.Linear or hasattr(base, "_ts_fp8_w") or base.weight.requires_grad:
            continue
        w = base.weight
        if not w.is_cuda or w.shape[0] % 16 or w.shape[1] % 16:
            continue
        wf = w.float()
        scale = wf.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / _FP8_MAX  # [N, 1]
        wq = (wf / scale).to(torch.float8_e4m3fn)
        del wf
        base.register_buffer("_ts_fp8_w", wq, persistent=False)
        base.register_buffer("_ts_fp8_scale", scale.reshape(1, -1).contiguous(), persistent=False)
        # keep a 0-element parameter so code that reads weight.dtype/device still works; the bf16 copy is freed
        base.weight = torch.nn.Parameter(torch.empty(0, dtype=w.dtype, device=w.device), requires_grad=False)
        base.forward = MethodType(_fp8_linear_forward, base)
        n += 1
    if n:
        torch.cuda.empty_cache()
    return n


class _FusedLoraFp8Linear(torch.autograd.Function):
    """The fused LoRA linear with the frozen base on FP8 tensor cores (LoRA term in bf16)."""

    @staticmethod
    def forward(ctx, x, wq, w_scale, bias, lora_a, lora_b, scaling: float, p: float):
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        dt = x2.dtype
        a = lora_a.to(dt)
        b = lora_b.to(dt)
        out = _fp8_mm(x2, wq, w_scale, dt)
        if bias is not None:
            out.add_(bias.to(dt))
        if p > 0.0:
            xd, mask = torch.native_dropout(x2, p, True)
        else:
            xd, mask = x2, None
        xa = torch.mm(xd, a.t())
        out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(wq, w_scale, lora_a, lora_b, xd, xa, mask)
        ctx.scaling, ctx.p, ctx.in_shape = scaling, p, in_shape
        return out.view(*in_shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        wq, w_scale, lora_a, lora_b, xd, xa, mask = ctx.saved_tensors
        s, p = ctx.scaling, ctx.p
        g = grad_out.reshape(-1, grad_out.shape[-1])
        dt = g.dtype
        a = lora_a.to(dt)
        b = lora_b.to(dt)
        gx = ga = gb = None
        g_xa = torch.mm(g, b)
        if ctx.needs_input_grad[5]:
            gb = torch.mm(g.t(), xa.to(dt)).mul_(s).to(lora_b.dtype)
        if ctx.needs_input_grad[4]:
            ga = torch.mm(g_xa.t(), xd.to(dt)).mul_(s).to(lora_a.dtype)
        if ctx.needs_input_grad[0]:
            gx = _fp8_mm_grad_input(g, wq, w_scale)
            if mask is None:
                gx.addmm_(g_xa, a, alpha=s)
            else:
                gx.add_(torch.mm(g_xa, a).mul_(mask), alpha=s / (1.0 - p))
            gx = gx.view(ctx.in_shape)
        return gx, None, None, None, ga, gb, None, None


# ------------------------------------------------ Triton LoRA side path (in-kernel dropout)
#
# peft's LoRA term is s * B(A(dropout(x))). The fused autograd functions above still run it as
# torch ops: dropout materialises dropout(x) and a bool mask (a read and 2.5 writes of x), A reads
# dropout(x) again, the FP8 path quantises x in a separate pass for each of q/k/v (and gate/up),
# which read the same x, and the backward builds (dH A) * mask / (1-p) in four passes over a
# [T, K] tensor. The kernels below do the same maths without any of those tensors:
#
# * forward: one pass over x computes the row-wise FP8 quantisation (when the base is FP8) AND
#   x_drop A^T, with the dropout mask drawn from a counter-based generator (Philox, the generator
#   torch's own CUDA dropout uses) inside the kernel: x_drop and the mask are never stored;
#   sibling projections that read the same x (q/k/v, gate/up) reuse its FP8 quantisation;
# * backward: one pass over the output gradient computes its FP8 quantisation and dH = g B; one
#   pass over x regenerates the mask from the saved seed and computes both dA = s x_drop^T dH and
#   the input-gradient term gx += s (dH A) * mask / (1-p), in place.
#
# Status (issue 14): correct per call against a float reference with the same mask (unit tests, CPU
# interpreter and H200); the same 8-layer loss curve as peft's with dropout 0.1 since the mask generator runs
# Philox with 10 rounds (with 7 it did not: see PHILOX_ROUNDS), so apply_speedups(lora_kernels=True) is the
# default on a GPU.
#
# Dropout semantics: each module draws its own seed per call (from torch's CPU generator, which
# activation checkpointing saves and restores, so the recompute draws the same mask), so masks are
# independent across modules and steps, as with peft's nn.Dropout. Each element is kept when a
# 16-bit uniform integer is >= round(p * 65536); the drop probability is therefore that value /
# 65536 (0.100006 for p = 0.1, 6e-6 off) and kept elements are scaled by 1 / (1 - that), so the
# dropped input is unbiased, exactly as torch's dropout (which scales by 1 / (1 - p)).

_LORA_R = 16  # rank padded to the smallest tl.dot size


def lora_kernels_available() -> bool:
    """Triton importable and a CUDA device (or Triton's CPU interpreter, used by the tests)."""
    if importlib.util.find_spec("triton") is None:
        return False
    import os

    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def _dropout_threshold(p: float) -> tuple[int, float]:
    """(16-bit threshold, scale of kept elements) for drop probability p."""
    t = int(round(float(p) * 65536.0))
    t = min(max(t, 0), 65535)
    return t, 65536.0 / (65536.0 - t)


try:  # the kernels are module-level (Triton resolves names through the module's globals)
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - CPU installs without Triton
    triton = None

if triton is not None:

    @triton.jit
    def _tl_lora_keep(seed, rows, k0, K8, thresh, BM: tl.constexpr, BK: tl.constexpr, ROUNDS: tl.constexpr):
        # element (row, col): Philox counter row * K/8 + col // 8, one of its eight 16-bit outputs;
        # a function of (seed, row, col) only, so every kernel (any tiling) regenerates the same mask
        c8 = k0 // 8 + tl.arange(0, BK // 8)
        ctr = rows[:, None] * K8 + c8[None, :]
        r0, r1, r2, r3 = tl.randint4x(seed, ctr, ROUNDS)
        lo = 0xFFFF
        v = tl.join(
            tl.join(tl.join(r0 & lo, r0 >> 16), tl.join(r1 & lo, r1 >> 16)),
            tl.join(tl.join(r2 & lo, r2 >> 16), tl.join(r3 & lo, r3 >> 16)),
        )
        v = tl.reshape(v, (BM, BK))
        return v >= thresh

    @triton.jit
    def _tl_lora_fwd(x_ptr, a_ptr, xa_ptr, q_ptr, s_ptr, col_ptr, M, K, R_REAL, seed, thresh, inv_keep,
             R: tl.constexpr, QUANT: tl.constexpr, HAS_COL: tl.constexpr, DROP: tl.constexpr,
             BM: tl.constexpr, BK: tl.constexpr, ROUNDS: tl.constexpr):
        # xa = drop(x) @ A^T  ([M, K] x [r, K] -> [M, r], fp32); with QUANT also the row-wise fp8 of x (* col)
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        rmask = rows < M
        rows64 = rows.to(tl.int64)
        jr = tl.arange(0, R)
        acc = tl.zeros((BM, R), dtype=tl.float32)
        amax = tl.zeros((BM,), dtype=tl.float32)
        for k0 in range(0, K, BK):
            cols = k0 + tl.arange(0, BK)
            cmask = cols < K
            m2 = rmask[:, None] & cmask[None, :]
            x = tl.load(x_ptr + rows64[:, None] * K + cols[None, :], mask=m2, other=0.0)
            if QUANT:
                xf = x.to(tl.float32)
                if HAS_COL:
                    xf = xf * tl.load(col_ptr + cols, mask=cmask, other=0.0)[None, :]
                amax = tl.maximum(amax, tl.max(tl.abs(xf), axis=1))
            if DROP:
                keep = _tl_lora_keep(seed, rows, k0, K // 8, thresh, BM, BK, ROUNDS)
                xd = tl.where(keep, x.to(tl.float32) * inv_keep, 0.0).to(x.dtype)
            else:
                xd = x
            a = tl.load(a_ptr + jr[None, :] * K + cols[:, None], mask=(jr[None, :] < R_REAL) & cmask[:, None], other=0.0)
            acc += tl.dot(xd, a)
        tl.store(xa_ptr + rows64[:, None] * R_REAL + jr[None, :], acc, mask=rmask[:, None] & (jr[None, :] < R_REAL))
        if QUANT:
            scale = tl.maximum(amax, 1e-12) / 448.0
            tl.store(s_ptr + rows, scale, mask=rmask)
            for k0 in range(0, K, BK):
                cols = k0 + tl.arange(0, BK)
                cmask = cols < K
                m2 = rmask[:, None] & cmask[None, :]
                xf = tl.load(x_ptr + rows64[:, None] * K + cols[None, :], mask=m2, other=0.0).to(tl.float32)
                if HAS_COL:
                    xf = xf * tl.load(col_ptr + cols, mask=cmask, other=0.0)[None, :]
                tl.store(q_ptr + rows64[:, None] * K + cols[None, :], (xf / scale[:, None]).to(q_ptr.dtype.element_ty),
                         mask=m2)

    @triton.jit
    def _tl_lora_bwd(x_ptr, gxa_ptr, a_ptr, gx_ptr, ga_ptr, M, K, R_REAL, seed, thresh, inv_keep, scaling, ROWS_PER_SPLIT,
             R: tl.constexpr, DROP: tl.constexpr, DO_GX: tl.constexpr, DO_GA: tl.constexpr,
             BM: tl.constexpr, BK: tl.constexpr, ROUNDS: tl.constexpr):
        # over the rows of one split, for one block of columns:
        #   ga[split] = s * dH^T drop(x)              ([r, BK] partial sums, fp32)
        #   gx       += s * (dH A) * mask / (1 - p)   (in place)
        pid_k = tl.program_id(0)
        pid_s = tl.program_id(1)
        k0 = pid_k * BK
        cols = k0 + tl.arange(0, BK)
        cmask = cols < K
        jr = tl.arange(0, R)
        jm = jr < R_REAL
        acc = tl.zeros((R, BK), dtype=tl.float32)
        if DO_GX:
            a = tl.load(a_ptr + jr[:, None] * K + cols[None, :], mask=jm[:, None] & cmask[None, :], other=0.0)
        start = pid_s * ROWS_PER_SPLIT
        for m0 in range(start, start + ROWS_PER_SPLIT, BM):
            rows = m0 + tl.arange(0, BM)
            rmask = rows < M
            rows64 = rows.to(tl.int64)
            m2 = rmask[:, None] & cmask[None, :]
            g = tl.load(gxa_ptr + rows64[:, None] * R_REAL + jr[None, :], mask=rmask[:, None] & jm[None, :], other=0.0)
            g = g.to(x_ptr.dtype.element_ty)
            if DROP:
                keep = _tl_lora_keep(seed, rows, k0, K // 8, thresh, BM, BK, ROUNDS)
            if DO_GA:
                x = tl.load(x_ptr + rows64[:, None] * K + cols[None, :], mask=m2, other=0.0)
                if DROP:
                    x = tl.where(keep, x.to(tl.float32) * inv_keep, 0.0).to(x_ptr.dtype.element_ty)
                acc += tl.dot(tl.trans(g), x)
            if DO_GX:
                upd = tl.dot(g, a)
                if DROP:
                    upd = tl.where(keep, upd * inv_keep, 0.0)
                ptr = gx_ptr + rows64[:, None] * K + cols[None, :]
                old = tl.load(ptr, mask=m2, other=0.0).to(tl.float32)
                tl.store(ptr, (old + scaling * upd).to(gx_ptr.dtype.element_ty), mask=m2)
        if DO_GA:
            tl.store(ga_ptr + pid_s * R_REAL * K + jr[:, None] * K + cols[None, :], acc * scaling,
                     mask=jm[:, None] & cmask[None, :])

    @triton.jit
    def _tl_transpose(src_ptr, dst_ptr, R, C, BR: tl.constexpr, BC: tl.constexpr):
        # dst [C, R] = src [R, C]^T through a tile in registers/shared memory (coalesced both ways)
        rows = tl.program_id(0) * BR + tl.arange(0, BR)
        cols = tl.program_id(1) * BC + tl.arange(0, BC)
        m = (rows < R)[:, None] & (cols < C)[None, :]
        t = tl.load(src_ptr + rows.to(tl.int64)[:, None] * C + cols[None, :], mask=m, other=0)
        tl.store(dst_ptr + cols.to(tl.int64)[:, None] * R + rows[None, :], tl.trans(t), mask=tl.trans(m))

    @triton.jit
    def _tl_lora_mask(m_ptr, M, K, seed, thresh, BM: tl.constexpr, BK: tl.constexpr, ROUNDS: tl.constexpr):
        # the keep mask itself (tests and the reference path only)
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        k0 = tl.program_id(1) * BK
        cols = k0 + tl.arange(0, BK)
        keep = _tl_lora_keep(seed, rows, k0, K // 8, thresh, BM, BK, ROUNDS)
        m2 = (rows < M)[:, None] & (cols < K)[None, :]
        tl.store(m_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :], keep.to(tl.int8), mask=m2)


def _lora_kernels():
    return {"fwd": _tl_lora_fwd, "bwd": _tl_lora_bwd, "mask": _tl_lora_mask}


# launch parameters (H200-tuned in bench/bench_sft_gpu.py --kernels; any multiple of 8 for BK works)
LORA_FWD_CFG = {"BM": 32, "BK": 128, "num_warps": 4}
LORA_BWD_CFG = {"BM": 32, "BK": 256, "num_warps": 4}
LORA_ADD_CFG = {"BM": 32, "BK": 256, "num_warps": 4}
# Philox rounds of the dropout generator: 10, as torch's curand dropout and Triton's default. 7 rounds (used
# until issue 14's third session, 9 ms less per 8B step) gave masks that pass every per-call check (drop rate,
# independence across seeds, no row/column structure, E and Var of x_drop A^T, bit-exact against a numpy
# Philox) yet trained differently: the 8-layer loss curve with dropout 0.1 ran below peft's and even below
# dropout 0, the same with torch ops fed the 7-round mask, and back on peft's curve with 10 rounds
# (bench/results/sft_gpu_h200.md). With this counter layout (one counter word, three zero words, the seed
# only in the key) the first round merely copies the seed, so 7 rounds mix like 6: too few.
# TUTORSTACK_LORA_PHILOX_ROUNDS overrides it (diagnostics only).
PHILOX_ROUNDS = [10]
# the LoRA output term s * xA B^T added by a Triton kernel (True) or cuBLAS addmm_ (False)
TRITON_LORA_ADD = [True]  # measured on the H200: 0.083 vs 0.121 ms (N=4096), 0.267 vs 0.465 ms (N=14336)


def _cfg_from_env(name: str, cfg: dict) -> None:
    import os

    raw = os.environ.get(name, "")
    if raw:
        try:
            bm, bk, w = (int(v) for v in raw.split(","))
            cfg.update(BM=bm, BK=bk, num_warps=w)
        except ValueError:
            log.warning("speedups: ignoring %s=%r (want BM,BK,num_warps)", name, raw)


_cfg_from_env("TUTORSTACK_LORA_FWD_CFG", LORA_FWD_CFG)
_cfg_from_env("TUTORSTACK_LORA_BWD_CFG", LORA_BWD_CFG)
_cfg_from_env("TUTORSTACK_LORA_ADD_CFG", LORA_ADD_CFG)


def _flags_from_env() -> None:
    import os

    if os.environ.get("TUTORSTACK_LORA_PHILOX_ROUNDS"):
        PHILOX_ROUNDS[0] = int(os.environ["TUTORSTACK_LORA_PHILOX_ROUNDS"])
    if os.environ.get("TUTORSTACK_LORA_ADD"):
        TRITON_LORA_ADD[0] = os.environ["TUTORSTACK_LORA_ADD"] == "triton"


_flags_from_env()


def lora_add(out: torch.Tensor, xa: torch.Tensor, bt: torch.Tensor, scaling: float) -> torch.Tensor:
    """out += scaling * xa @ bt in place (out [M, N], xa [M, r], bt [r, N] contiguous in out's dtype)."""
    if TRITON_LORA_ADD[0] and out.is_contiguous() and xa.is_contiguous():
        lora_bwd(out, xa, bt, out, scaling, need_ga=False, cfg=LORA_ADD_CFG)
    else:
        out.addmm_(xa.to(out.dtype), bt, alpha=scaling)
    return out


def lora_kernel_fits(x2: torch.Tensor, rank: int) -> bool:
    m, k = x2.shape
    return (x2.dtype in (torch.bfloat16, torch.float16) and k % 8 == 0 and rank <= _LORA_R
            and m * (k // 8) < 2**31 - 2**20 and x2.is_contiguous())


def lora_fwd(x2: torch.Tensor, a: torch.Tensor, p: float = 0.0, seed: int = 0, quant: bool = False,
             col_scale: torch.Tensor | None = None, cfg: dict | None = None):
    """drop(x2) @ a^T -> fp32 [M, r] (mask from ``seed``); with ``quant`` also (fp8 [M, K], scales [M, 1])
    of x2 * col_scale, from the same pass over x2. ``a``: [r, K] in x2's dtype."""
    cfg = cfg or LORA_FWD_CFG
    m, k = x2.shape
    r = a.shape[0]
    xa = torch.empty((m, r), device=x2.device, dtype=torch.float32)
    q = torch.empty((m, k), device=x2.device, dtype=torch.float8_e4m3fn) if quant else xa
    s = torch.empty((m, 1), device=x2.device, dtype=torch.float32) if quant else xa
    thresh, inv_keep = _dropout_threshold(p)
    drop = p > 0.0 and thresh > 0
    if m:
        _lora_kernels()["fwd"][(triton_cdiv(m, cfg["BM"]),)](
            x2, a, xa, q, s, col_scale if col_scale is not None else xa, m, k, r, int(seed), thresh, inv_keep,
            R=_LORA_R, QUANT=quant, HAS_COL=col_scale is not None, DROP=drop,
            BM=cfg["BM"], BK=cfg["BK"], num_warps=cfg["num_warps"], ROUNDS=PHILOX_ROUNDS[0],
        )
    return (xa, q, s) if quant else xa


def lora_bwd(x2: torch.Tensor, gxa: torch.Tensor, a: torch.Tensor, gx: torch.Tensor | None, scaling: float,
             p: float = 0.0, seed: int = 0, need_ga: bool = True, cfg: dict | None = None):
    """gx += scaling * (gxa @ a) * mask / (1-p) in place (if gx is given); returns
    ga = scaling * gxa^T @ drop(x2) as fp32 [r, K] (or None). Same mask as :func:`lora_fwd` with ``seed``."""
    cfg = cfg or LORA_BWD_CFG
    m, k = x2.shape
    r = a.shape[0]
    bm, bk = cfg["BM"], cfg["BK"]
    col_blocks = triton_cdiv(k, bk)
    row_blocks = triton_cdiv(max(m, 1), bm)
    n_sm = torch.cuda.get_device_properties(x2.device).multi_processor_count if x2.is_cuda else 4
    splits = max(1, min(row_blocks, (4 * n_sm) // col_blocks))
    rows_per_split = triton_cdiv(row_blocks, splits) * bm
    splits = triton_cdiv(max(m, 1), rows_per_split)
    thresh, inv_keep = _dropout_threshold(p)
    drop = p > 0.0 and thresh > 0
    ga = torch.empty((splits, r, k), device=x2.device, dtype=torch.float32) if need_ga else None
    if m:
        _lora_kernels()["bwd"][(col_blocks, splits)](
            x2, gxa, a, gx if gx is not None else x2, ga if ga is not None else gxa, m, k, r, int(seed), thresh,
            inv_keep, float(scaling), rows_per_split,
            R=_LORA_R, DROP=drop, DO_GX=gx is not None, DO_GA=need_ga, BM=bm, BK=bk, num_warps=cfg["num_warps"],
            ROUNDS=PHILOX_ROUNDS[0],
        )
    elif ga is not None:
        ga.zero_()
    return ga.sum(0) if ga is not None else None


TRITON_TRANSPOSE = [True]  # False: torch's copy (bench modifier notr)


def transpose_fp8(w: torch.Tensor) -> torch.Tensor:
    """w [R, C] (FP8, contiguous) -> w^T [C, R] contiguous. torch's strided copy of a 1-byte tensor runs at
    about 0.35 TB/s on the H200 (180 us per weight, 40 ms per 8B step: measured); a tiled Triton copy runs
    near the memory bandwidth. Falls back to torch off CUDA or without Triton."""
    if (not TRITON_TRANSPOSE[0] or triton is None or not (w.is_cuda or _interpreting()) or not w.is_contiguous()
            or w.dim() != 2):
        return w.t().contiguous()
    r, c = w.shape
    src = w.view(torch.uint8)
    dst = torch.empty((c, r), device=w.device, dtype=torch.uint8)
    _tl_transpose[(triton_cdiv(r, 64), triton_cdiv(c, 64))](src, dst, r, c, BR=64, BC=64, num_warps=4)
    return dst.view(w.dtype)


def lora_dropout_mask(m: int, k: int, p: float, seed: int, device) -> torch.Tensor:
    """The keep mask (bool [m, k]) the kernels use for ``seed`` (tests, reference computations)."""
    thresh, _ = _dropout_threshold(p)
    out = torch.empty((m, k), device=device, dtype=torch.int8)
    _lora_kernels()["mask"][(triton_cdiv(m, 32), triton_cdiv(k, 128))](out, m, k, int(seed), thresh, BM=32, BK=128,
                                                                                  ROUNDS=PHILOX_ROUNDS[0])
    return out.bool()


def lora_dropout_mask_reference(m: int, k: int, p: float, seed: int, rounds: int | None = None):
    """The kernels' keep mask computed in numpy (bool [m, k]): Philox-4x32 exactly as Triton's ``tl.randint4x``
    (counter row * k/8 + col // 8, key = seed), eight 16-bit uniforms per counter in the kernels' order.
    For tests and diagnostics: the GPU kernels must match it bit for bit."""
    import numpy as np

    thresh, _ = _dropout_threshold(p)
    u32 = np.uint64(0xFFFFFFFF)
    ka, kb, ra, rb = (np.uint64(v) for v in (0x9E3779B9, 0xBB67AE85, 0xD2511F53, 0xCD9E8D57))
    c0 = (np.arange(m, dtype=np.uint64)[:, None] * np.uint64(k // 8) + np.arange(k // 8, dtype=np.uint64)[None, :])
    c1, c2, c3 = np.zeros_like(c0), np.zeros_like(c0), np.zeros_like(c0)
    k0, k1 = np.uint64(int(seed) & 0xFFFFFFFF), np.uint64(0)
    for _ in range(PHILOX_ROUNDS[0] if rounds is None else int(rounds)):
        _c0, _c2 = c0, c2
        c0 = ((rb * _c2) >> np.uint64(32)) ^ c1 ^ k0
        c2 = ((ra * _c0) >> np.uint64(32)) ^ c3 ^ k1
        c1 = (rb * _c2) & u32
        c3 = (ra * _c0) & u32
        k0, k1 = (k0 + ka) & u32, (k1 + kb) & u32

    def halves(r):
        return np.stack([r & np.uint64(0xFFFF), r >> np.uint64(16)], -1)

    v = np.stack([np.stack([halves(c0), halves(c1)], -1), np.stack([halves(c2), halves(c3)], -1)], -1)
    return v.reshape(m, k) >= thresh


def triton_cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


_QUANT_SHARING = [False]  # set by apply_speedups(lora_kernels=True): FP8 quantisation shared by siblings
_QUANT_CACHE: list = [None, None]  # [(weakref to x, x._version, shape), (q, s)]: siblings that read the same x


def _version(x: torch.Tensor):
    try:
        return x._version
    except RuntimeError:  # inference-mode tensors have no version counter: never cached
        return None


def _cached_quant(x: torch.Tensor):
    key = _QUANT_CACHE[0]
    if key is not None and key[0]() is x and key[1] is not None and key[1] == _version(x) and key[2] == x.shape:
        return _QUANT_CACHE[1]
    return None


def _store_quant(x: torch.Tensor, qs) -> None:
    try:
        _QUANT_CACHE[0], _QUANT_CACHE[1] = (weakref.ref(x), _version(x), x.shape), qs
    except TypeError:  # pragma: no cover
        _QUANT_CACHE[0] = _QUANT_CACHE[1] = None


def clear_quant_cache() -> None:
    _QUANT_CACHE[0] = _QUANT_CACHE[1] = None


def _draw_seed() -> int:
    # torch's CPU generator: per module and call; checkpointing restores it for the recompute
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


class _TritonLoraLinear(torch.autograd.Function):
    """y = base(x) + s * (drop(x) A^T) B^T with the LoRA side path and dropout in Triton kernels.

    ``wq``/``w_scale`` given: FP8 base (x quantised in the same pass as x A^T, shared by siblings);
    else ``weight`` (bf16 base, cuBLAS). Saved for backward: x itself (siblings save the same tensor),
    x A^T ([T, r]) and the seed - no dropped copy of x, no mask.
    """

    @staticmethod
    def forward(ctx, x, wq, w_scale, weight, bias, lora_a, lora_b, scaling: float, p: float):
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        dt = x2.dtype
        a = lora_a.to(dt).contiguous()
        b = lora_b.to(dt)
        seed = _draw_seed() if p > 0.0 else 0
        if wq is not None:
            cached = _cached_quant(x)
            if cached is None:
                xa, q, s = lora_fwd(x2, a, p, seed, quant=True)
                _store_quant(x, (q, s))
            else:
                q, s = cached
                xa = lora_fwd(x2, a, p, seed)
            qp, sp_, pad = _pad_rows(q, s)
            out = torch._scaled_mm(qp, wq.t(), scale_a=sp_, scale_b=w_scale, out_dtype=dt)
            if pad:
                out = out[: out.shape[0] - pad]
        else:
            xa = lora_fwd(x2, a, p, seed)
            out = torch.mm(x2, weight.t() if weight.dtype == dt else weight.to(dt).t())
        if bias is not None:
            out.add_(bias.to(dt))
        xa = xa.to(dt)
        lora_add(out, xa, b.t().contiguous(), scaling)
        ctx.save_for_backward(x2, wq, w_scale, weight, lora_a, lora_b, xa)
        ctx.scaling, ctx.p, ctx.seed, ctx.in_shape = scaling, p, seed, in_shape
        return out.view(*in_shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, wq, w_scale, weight, lora_a, lora_b, xa = ctx.saved_tensors
        s, p, seed = ctx.scaling, ctx.p, ctx.seed
        g = grad_out.reshape(-1, grad_out.shape[-1]).contiguous()
        dt = g.dtype
        a = lora_a.to(dt).contiguous()
        bt = lora_b.to(dt).t().contiguous()  # [r, N]
        need_x = ctx.needs_input_grad[0]
        gx = ga = gb = None
        if need_x and wq is not None:
            gxa, gq, gs = lora_fwd(g, bt, quant=True, col_scale=w_scale.reshape(-1))
            gq, gs, pad = _pad_rows(gq, gs)
            wt = transpose_fp8(wq)
            ones = torch.ones((1, wq.shape[1]), device=g.device, dtype=torch.float32)
            gx = torch._scaled_mm(gq, wt.t(), scale_a=gs, scale_b=ones, out_dtype=dt)
            if pad:
                gx = gx[: gx.shape[0] - pad]
        else:
            gxa = lora_fwd(g, bt)
            if need_x:
                gx = torch.mm(g, weight if weight.dtype == dt else weight.to(dt))
        if ctx.needs_input_grad[6]:
            gb = torch.mm(g.t(), xa).mul_(s).to(lora_b.dtype)
        need_ga = ctx.needs_input_grad[5]
        if need_ga or gx is not None:
            ga = lora_bwd(x2, gxa, a, gx, s, p, seed, need_ga=need_ga)
            if ga is not None:
                ga = ga.to(lora_a.dtype)
        if gx is not None:
            gx = gx.view(ctx.in_shape)
        return gx, None, None, None, None, ga, gb, None, None


# ----------------------------------------------------------- selective checkpointing


def activation_bytes_per_token(config) -> int:
    """Bytes a decoder layer keeps for backward per token when it is NOT checkpointed (bf16, LoRA
    with dropout: q/k/v/o/gate/up/down inputs, attention q/k/v/out, SwiGLU gate/up, norms, masks).
    An estimate used to size selective checkpointing; measured peaks are in the bench."""
    d = int(getattr(config, "hidden_size", 4096))
    ff = int(getattr(config, "intermediate_size", 4 * d))
    heads = int(getattr(config, "num_attention_heads", 32))
    kv = int(getattr(config, "num_key_value_heads", heads) or heads)
    kv_dim = d // heads * kv
    elems = 10 * d + 2 * kv_dim + 3 * ff
    masks = 6 * d + ff  # bool dropout masks
    return 2 * elems + masks


def _gc_hook(hf, name: str, fn) -> None:
    """Run ``fn`` now and after every later ``gradient_checkpointing_enable()`` /
    ``activation_checkpointing_enable()`` (HF Trainer calls one at train start and resets every layer).
    Hooks run in a fixed order: ``unchecked`` before ``saved_attention`` (the latter picks among the
    layers that are still checkpointed)."""
    hooks = hf.__dict__.setdefault("_ts_gc_hooks", {})
    hooks[name] = fn

    def run_hooks():
        for key in sorted(hooks, key=lambda k: (k != "unchecked", k)):
            hooks[key]()

    for meth in ("gradient_checkpointing_enable", "activation_checkpointing_enable"):
        if not hasattr(hf, meth):
            continue
        attr = f"_ts_orig_{meth}"
        orig = hf.__dict__.get(attr) or getattr(hf, meth)

        def enable(*a, _orig=orig, **kw):
            out = _orig(*a, **kw)
            run_hooks()
            return out

        hf.__dict__[attr] = orig
        setattr(hf, meth, enable)
    run_hooks()


def set_selective_checkpointing(model, unchecked_layers: int) -> int:
    """Leave the last ``unchecked_layers`` decoder layers out of activation checkpointing (they keep
    their activations and skip the recompute); the others stay checkpointed. Survives a later
    ``gradient_checkpointing_enable()`` (HF Trainer calls it at train start). Returns how many are unchecked."""
    hf = _hf_model(model)
    layers = _decoder_layers(hf)
    if not layers:
        return 0
    n = max(0, min(int(unchecked_layers), len(layers)))

    def _apply():
        for i, layer in enumerate(layers):
            if hasattr(layer, "gradient_checkpointing") and i >= len(layers) - n:
                layer.gradient_checkpointing = False

    _gc_hook(hf, "unchecked", _apply)
    return n


# Attention ops whose outputs a checkpointed layer keeps (selective activation checkpointing), so the
# recompute skips the attention forward: SDPA's cuDNN / flash / efficient / CPU-flash kernels, the
# FlashAttention(-varlen) forward, torch's varlen_attn. Backward ops never match.
_ATTN_OP_KEYS = ("scaled_dot_product", "flash_attention_forward", "efficient_attention_forward", "varlen_attn",
                 "flash_attn")


@functools.lru_cache(maxsize=None)  # the SAC policy asks for every op of every checkpointed forward
def is_attention_op(func) -> bool:
    """True for the forward attention ops that :func:`attention_save_policy` keeps."""
    try:
        name = func.name() if hasattr(func, "name") else str(func)
    except Exception:
        name = str(func)
    name = str(name).lower()
    return "backward" not in name and any(k in name for k in _ATTN_OP_KEYS)


def attention_save_policy(ctx, func, *args, **kwargs):
    """``torch.utils.checkpoint`` SAC policy: MUST_SAVE the attention forward's outputs (out, logsumexp,
    seeds...), recompute everything else (the LoRA dropout seeds drawn by ``torch.randint`` too: the
    non-reentrant checkpoint restores the CPU RNG state, so the recompute draws the same seeds)."""
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if is_attention_op(func) else CheckpointPolicy.PREFER_RECOMPUTE


def attention_saving_checkpoint(function, *args, **kwargs):
    """``torch.utils.checkpoint.checkpoint`` (non-reentrant) keeping the attention op's outputs."""
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    kwargs["use_reentrant"] = False
    kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, attention_save_policy)
    return checkpoint(function, *args, **kwargs)


def saved_attention_bytes_per_token(config) -> int:
    """What keeping the attention forward's outputs costs per token and layer: the bf16 output
    (hidden) and the fp32 logsumexp per head."""
    d = int(getattr(config, "hidden_size", 4096))
    heads = int(getattr(config, "num_attention_heads", 32))
    return 2 * d + 4 * heads


def set_saved_attention_layers(model, saved_attention_layers: int) -> int:
    """Selective activation checkpointing of the attention: the last ``saved_attention_layers`` decoder
    layers that are still checkpointed (those just before the ``unchecked_layers``) keep the attention
    op's outputs, so their recompute skips the attention forward (T x hidden bf16 per layer, vs a whole
    layer's activations for an unchecked one). Needs torch >= 2.4 (``create_selective_checkpoint_contexts``);
    survives a later ``gradient_checkpointing_enable()``. Returns how many layers do it."""
    try:
        from torch.utils.checkpoint import create_selective_checkpoint_contexts  # noqa: F401
    except ImportError:
        log.info("speedups: this torch has no selective activation checkpointing; saved_attention_layers ignored")
        return 0
    hf = _hf_model(model)
    layers = _decoder_layers(hf)
    want = max(0, int(saved_attention_layers))
    count = [0]
    if not layers:
        return 0

    def _apply():
        checked = [layer for layer in layers if getattr(layer, "gradient_checkpointing", False)]
        chosen = checked[len(checked) - min(want, len(checked)):] if want else []
        for layer in layers:
            cur = layer.__dict__.get("_gradient_checkpointing_func")
            if cur is not attention_saving_checkpoint:  # HF's enable() just (re)set the plain one
                layer._ts_plain_gc_func = cur
            if any(layer is c for c in chosen):
                layer._gradient_checkpointing_func = attention_saving_checkpoint
            elif cur is attention_saving_checkpoint:
                layer._gradient_checkpointing_func = layer.__dict__.get("_ts_plain_gc_func")
        count[0] = len(chosen)

    _gc_hook(hf, "saved_attention", _apply)
    return count[0]


def auto_unchecked_layers(model, tokens_per_micro_batch: int, budget_bytes: int) -> int:
    """How many layers can skip the recompute within ``budget_bytes`` of activation memory."""
    hf = _hf_model(model)
    per_layer = activation_bytes_per_token(hf.config) * max(1, tokens_per_micro_batch)
    return max(0, min(len(_decoder_layers(hf)), int(budget_bytes // max(per_layer, 1))))


def auto_saved_attention_layers(model, tokens_per_micro_batch: int, budget_bytes: int, unchecked: int) -> int:
    """How many checkpointed layers can keep their attention outputs within what ``budget_bytes`` leaves
    after ``unchecked`` layers' activations."""
    hf = _hf_model(model)
    tokens = max(1, tokens_per_micro_batch)
    left = budget_bytes - unchecked * activation_bytes_per_token(hf.config) * tokens
    per_layer = saved_attention_bytes_per_token(hf.config) * tokens
    n_checked = len(_decoder_layers(hf)) - unchecked
    return max(0, min(n_checked, int(left // max(per_layer, 1))))


# ------------------------------------------------------------------ attention backend


_SDPA_ORDER: list | None = None


def _sdpa_context():
    """cuDNN attention first (1.8x FlashAttention-2's fwd+bwd on the H200 at 6 x 3072, GQA), then flash."""
    from contextlib import nullcontext

    if _SDPA_ORDER is None:
        return nullcontext()
    from torch.nn.attention import sdpa_kernel

    try:
        return sdpa_kernel(_SDPA_ORDER, set_priority=True)
    except TypeError:  # older torch: no priority, the list is a filter
        return sdpa_kernel(_SDPA_ORDER)


def use_cudnn_attention() -> bool:
    global _SDPA_ORDER
    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention import SDPBackend
    except Exception:
        return False
    if not torch.backends.cuda.cudnn_sdp_enabled():
        return False
    _SDPA_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.MATH]
    return True


# -------------------------------------------------------- chunked log-probs (DPO)


def _chunk_logps(h, weight, labels):
    logits = torch.mm(h, weight.t()).float()
    lse = torch.logsumexp(logits, dim=-1)
    safe = labels.clamp(min=0)
    tok = logits.gather(1, safe[:, None]).squeeze(1)
    return torch.where(labels >= 0, tok - lse, torch.zeros_like(lse))


class _FusedLinearLogps(torch.autograd.Function):
    """Token log-probs through a frozen ``lm_head``, chunk by chunk, with d logp / d hidden computed in the
    forward pass (like Liger's fused linear cross-entropy): 2 GEMMs per chunk instead of 4 (no recompute),
    and only a [T, d] gradient buffer is kept, never [T, V] logits."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk: int):
        out = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.float32)
        need = ctx.needs_input_grad[0]
        grad_h = torch.empty_like(hidden) if need else None
        for i in range(0, hidden.shape[0], chunk):
            h, lab = hidden[i : i + chunk], labels[i : i + chunk]
            logits = torch.mm(h, weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            valid = lab >= 0
            safe = lab.clamp(min=0)
            tok = logits.gather(1, safe[:, None]).squeeze(1)
            out[i : i + chunk] = torch.where(valid, tok - lse, torch.zeros_like(lse))
            if need:
                p = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                p.scatter_add_(1, safe[:, None], -torch.ones_like(lse)[:, None])  # p - onehot
                p.mul_(valid[:, None])
                grad_h[i : i + chunk] = torch.mm(p.to(weight.dtype), weight).neg_()  # (onehot - p) W
            del logits
        if need:
            ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out[:, None].to(grad_h.dtype), None, None, None


def chunked_token_logps(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 4096):
    """log p(label_t | ...) for every token, ``lm_head`` applied chunk by chunk (0 where label < 0).

    hidden [T, d] (already shifted so row t predicts labels[t]), weight [V, d], labels [T].
    Each chunk's [chunk, V] fp32 logits exist only inside that chunk (recomputed in backward
    through ``torch.utils.checkpoint``), so DPO never holds the tokens x vocab logits of a batch.
    """
    from torch.utils.checkpoint import checkpoint

    if not weight.requires_grad:  # frozen lm_head (LoRA): fused forward + input gradient
        if torch.is_autocast_enabled(hidden.device.type):
            dt = torch.get_autocast_dtype(hidden.device.type)
            with torch.autocast(hidden.device.type, enabled=False):
                return _FusedLinearLogps.apply(hidden.to(dt), weight.to(dt), labels, chunk)
        return _FusedLinearLogps.apply(hidden, weight, labels, chunk)
    outs = []
    for i in range(0, hidden.shape[0], chunk):
        h, lab = hidden[i : i + chunk], labels[i : i + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            outs.append(checkpoint(_chunk_logps, h, weight, lab, use_reentrant=False))
        else:
            outs.append(_chunk_logps(h, weight, lab))
    return torch.cat(outs) if outs else hidden.new_zeros(0, dtype=torch.float32)


# ---------------------------------------------------------------------- entry point


def _apply_liger(hf_model) -> bool:
    try:
        try:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance
        except ImportError:
            from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance
    except Exception as exc:
        log.info("speedups: liger-kernel not usable (%s); no fused kernels", exc)
        return False
    _apply_liger_kernel_to_instance(
        model=hf_model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True
    )
    return True


def _decoder_layers(hf_model) -> Sequence[torch.nn.Module]:
    inner = getattr(hf_model, getattr(hf_model, "base_model_prefix", "model"), hf_model)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


def apply_speedups(
    model,
    *,
    device: str,
    enable: bool,
    liger: bool = True,
    fused_lora: bool = True,
    padding_free_attention: bool = True,
    compile_layers: bool = False,
    fp8: bool = True,
    cudnn_attention: bool = True,
    lora_kernels: bool = True,
    unchecked_layers: int | None = None,
    saved_attention_layers: int | None = None,
    activation_budget_gib: float | None = None,
    tokens_per_micro_batch: int | None = None,
):
    """Apply the GPU speed-ups to ``model`` in place and return it (see the module docstring).

    ``device``: where the model trains (``"cuda"``, ``"cuda:0"``, ``"cpu"``...).
    ``enable``: the config switch; ``False`` returns the model unchanged.
    ``fp8``: frozen base weights of the LoRA layers stored and multiplied in FP8 (Hopper/Ada only;
    falls back to bf16 with a log line elsewhere). ``cudnn_attention``: cuDNN first in SDPA's order.
    ``lora_kernels``: the LoRA side path with in-kernel dropout, the FP8 quantisation shared by sibling
    projections and fused with x A^T (Triton; without Triton the torch path of ``fused_lora`` stays, with a
    log line). On by default; ``False`` keeps the torch fused path (bench/results/sft_gpu_h200.md).
    ``unchecked_layers``: decoder layers that skip the checkpoint recompute (``None`` leaves
    checkpointing as it is; ``-1`` = as many as fit in ``activation_budget_gib`` at
    ``tokens_per_micro_batch``, by :func:`activation_bytes_per_token`).
    ``saved_attention_layers``: checkpointed layers (the last ones before the unchecked) whose recompute
    skips the attention forward, its outputs kept (:func:`set_saved_attention_layers`; ``None``/0 = none,
    ``-1`` = as many as the budget leaves after the unchecked layers).
    What was applied is recorded in ``model.tutorstack_speedups`` (a dict).
    """
    applied: dict[str, Any] = {}
    if not enable:
        log.info("speedups: disabled by config; model unchanged")
        return model
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        log.info("speedups: device %r is not CUDA; model unchanged", device)
        return model
    hf = _hf_model(model)
    if liger:
        if liger_available():
            applied["liger"] = _apply_liger(hf)
        else:
            log.info("speedups: liger-kernel not installed; no fused RMSNorm/SwiGLU/RoPE/cross-entropy")
    if fused_lora:
        use_kernels = bool(lora_kernels) and lora_kernels_available()
        if lora_kernels and not use_kernels:
            log.info("speedups: lora_kernels needs Triton (pip install triton) on CUDA; the LoRA side path and its "
                     "dropout run as torch ops instead (set lora_kernels=false to silence this)")
        n = fuse_lora_linears(model, kernels=use_kernels)
        _QUANT_SHARING[0] = use_kernels
        if n:
            applied["fused_lora"] = n
            if use_kernels:
                applied["lora_kernels"] = "triton"
    if fp8:
        if fp8_available():
            n = convert_frozen_linears_fp8(model)
            if n:
                applied["fp8_base"] = n
        else:
            log.info("speedups: FP8 needs CUDA compute capability >= 8.9, torch._scaled_mm and Triton; "
                     "base weights stay bf16")
    if cudnn_attention:
        if use_cudnn_attention():
            applied["sdpa"] = "cudnn_first"
        else:
            log.info("speedups: cuDNN attention not available; SDPA keeps its default order")
    if unchecked_layers is not None:
        n_un = int(unchecked_layers)
        if n_un < 0:
            budget = (activation_budget_gib or 0.0) * 2**30
            n_un = auto_unchecked_layers(model, int(tokens_per_micro_batch or 0), int(budget))
        applied["unchecked_layers"] = set_selective_checkpointing(model, n_un)
    if saved_attention_layers:
        n_sa = int(saved_attention_layers)
        if n_sa < 0:
            budget = (activation_budget_gib or 0.0) * 2**30
            n_sa = auto_saved_attention_layers(model, int(tokens_per_micro_batch or 0), int(budget),
                                               int(applied.get("unchecked_layers", 0)))
        applied["saved_attention_layers"] = set_saved_attention_layers(model, n_sa)
    if padding_free_attention and not flash_attn_available():
        current = getattr(hf.config, "_attn_implementation", None)
        if current in (None, "sdpa", "eager") and varlen_available() and register_varlen_attention():
            if _set_attn(model, VARLEN_ATTN_NAME):
                applied["attention"] = VARLEN_ATTN_NAME
    if compile_layers:
        layers = _decoder_layers(hf)
        for layer in layers:
            layer.compile(dynamic=False)
        applied["compiled_layers"] = len(layers)
    if applied:
        log.info("speedups: applied %s", applied)
    else:
        log.info("speedups: nothing applicable on this install; model unchanged")
    try:
        model.tutorstack_speedups = applied
    except Exception:  # pragma: no cover
        pass
    return model


def describe(model) -> dict[str, Any]:
    return dict(getattr(model, "tutorstack_speedups", {}) or {})


def iter_lora_linears(model) -> Iterable[torch.nn.Module]:  # pragma: no cover - debugging aid
    return (m for m in model.modules() if hasattr(m, "_tutorstack_orig_forward"))
