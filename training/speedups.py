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
* optionally ``torch.compile`` of each decoder layer (``compile_layers=True``). Off by
  default: measured on the H100 it gave nothing on top of the above (Liger's Triton
  kernels are not traceable by dynamo in torch 2.11 and fall back), and costs compile time.

Call it after ``get_peft_model`` so the LoRA layers exist to be fused (calling it
before is harmless: the Liger kernels and the attention are applied, the LoRA fusion
is then skipped; a second call after wrapping adds it). Measured effect (H100, Llama-3.1-8B
shape, LoRA r=8 on all linears, seq 3072, gradient checkpointing, batch 6):
1.48x the tokens/s of plain transformers+peft at 54% of its peak memory; on examples of
mixed lengths, where packing removes the padding, 2.38x at 51%
(``bench/bench_sft_gpu.py``, ``bench/results/sft_gpu_h100.md``).

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
    "fuse_lora_linears",
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
    return _FusedLoraLinear.apply(
        x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]), p
    )


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


def fuse_lora_linears(model) -> int:
    """Patch every vanilla peft ``lora.Linear`` in ``model`` to the fused forward. Returns the count.

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
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **_drop_packing_kwargs(kwargs)
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
):
    """Apply the GPU speed-ups to ``model`` in place and return it (see the module docstring).

    ``device``: where the model trains (``"cuda"``, ``"cuda:0"``, ``"cpu"``...).
    ``enable``: the config switch; ``False`` returns the model unchanged.
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
        n = fuse_lora_linears(model)
        if n:
            applied["fused_lora"] = n
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
