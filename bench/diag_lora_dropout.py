"""Diagnostic for issue 14: the Triton LoRA side path (lora_kernels) with LoRA dropout, against the torch path.

Three checks, each printed and written to ``--out/diag_lora_dropout.json``:

1. ``stats``: the kept fraction of the kernels' dropout mask at training shapes (8192 x 4096 / 14336) with seeds
   drawn as in training (mask kernel, forward with and without the FP8 quantisation, backward), and E / Var of
   x_drop A^T over many seeds against the theory (mean x A^T, variance p/(1-p) sum_k x^2 A^2).
2. ``step``: one training step (loss and every LoRA gradient) of a small model of the 8B layer shape through the
   kernels vs the torch fused path given the *same* mask (``torch.native_dropout`` replaced by the kernels'
   Philox mask with the same seeds), for several speed-up combinations: a mismatch localises an integration bug.
3. ``curve``: a short loss curve on real tokens (8 layers, seq 1024, batch 8) for the torch path, the kernels and
   the torch path with the kernels' mask.

Usage (GPU): ``python bench/diag_lora_dropout.py --out $OUT``; CPU plumbing check (Triton interpreter, tiny
shapes): ``TRITON_INTERPRET=1 PYTHONPATH=.:<triton dir> python bench/diag_lora_dropout.py --smoke-cpu``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_sft_gpu import TARGETS, llama8b_config  # noqa: E402


def _sp():
    from bench_sft_gpu import load_speedups

    return load_speedups()


@contextlib.contextmanager
def kernel_mask_dropout(sp):
    """torch.native_dropout -> the kernels' Philox mask, drawing its seed exactly as _TritonLoraLinear does."""
    import torch

    orig = torch.native_dropout

    def nd(x, p, train):
        seed = sp._draw_seed()
        x2 = x.reshape(-1, x.shape[-1])
        keep = sp.lora_dropout_mask(x2.shape[0], x2.shape[1], p, seed, x.device).reshape(x.shape)
        _t, inv = sp._dropout_threshold(p)
        return (x.float() * keep * inv).to(x.dtype), keep

    torch.native_dropout = nd
    try:
        yield
    finally:
        torch.native_dropout = orig


def stats(sp, args, res):
    import torch

    dev = args.dev
    dt = torch.bfloat16 if dev == "cuda" else torch.float16
    m = 8192 if not args.smoke_cpu else 256
    p = 0.1
    _t, inv = sp._dropout_threshold(p)
    out = []
    for k in ((4096, 14336) if not args.smoke_cpu else (512,)):
        x = torch.ones(m, k, device=dev, dtype=dt)
        a = torch.zeros(8, k, device=dev, dtype=dt)
        a[0] = 1
        for i in range(4):
            seed = sp._draw_seed()
            row = {"k": k, "seed": seed}
            row["mask"] = float(sp.lora_dropout_mask(m, k, p, seed, dev).float().mean())
            xa = sp.lora_fwd(x, a, p, seed)[:, 0] / inv / k
            row["fwd"] = float(xa.mean())
            row["fwd_row_min"] = float(xa.min())
            row["fwd_row_max"] = float(xa.max())
            if dev == "cuda":
                xq = sp.lora_fwd(x, a, p, seed, quant=True)[0][:, 0] / inv / k
                row["fwd_quant"] = float(xq.mean())
            ga = sp.lora_bwd(x, torch.ones(m, 8, device=dev), a, None, 1.0, p, seed)
            row["bwd_ga"] = float(ga[0].mean()) / inv / m
            gx = torch.zeros(m, k, device=dev, dtype=dt)
            sp.lora_bwd(x, torch.ones(m, 8, device=dev), a, gx, 1.0, p, seed, need_ga=False)
            row["bwd_gx"] = float((gx.float() != 0).float().mean())
            out.append(row)
            print("stats", json.dumps(row), flush=True)
    # E and Var of x_drop A^T over seeds, random x and A, vs theory and vs torch's dropout
    k, n_seeds = (4096, 64) if not args.smoke_cpu else (256, 32)
    mm = 2048 if not args.smoke_cpu else 64
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(mm, k, device=dev, generator=g).to(dt)
    a = (torch.randn(8, k, device=dev, generator=g) * 0.02).to(dt)
    exact = x.float() @ a.float().t()
    var_th = (p / (1 - p)) * (x.float() ** 2) @ (a.float() ** 2).t()
    summary = {}
    for name in ("kernel", "kernel_quant", "torch"):
        if name == "kernel_quant" and dev != "cuda":
            continue
        acc = torch.zeros_like(exact)
        acc2 = torch.zeros_like(exact)
        for _ in range(n_seeds):
            seed = sp._draw_seed()
            if name == "kernel":
                xa = sp.lora_fwd(x, a, p, seed)
            elif name == "kernel_quant":
                xa = sp.lora_fwd(x, a, p, seed, quant=True)[0]
            else:
                xa = torch.native_dropout(x, p, True)[0].float() @ a.float().t()
            d = xa.float() - exact
            acc += d
            acc2 += d * d
        mean_err = acc / n_seeds
        var = acc2 / n_seeds
        summary[name] = {
            "mean_err_over_sd": float((mean_err.abs() / (var_th / n_seeds).sqrt()).mean()),  # ~0.8 if unbiased
            "var_ratio": float(var.mean() / var_th.mean()),  # ~1 if the drop rate and scale are right
        }
        print("moments", name, json.dumps(summary[name]), flush=True)
    res["stats"] = {"masks": out, "moments": summary}


def maskcheck(sp, args, res):
    """The GPU's mask (mask kernel, forward and backward kernels) against the numpy reference, and across seeds."""
    import numpy as np
    import torch

    dev = args.dev
    dt = torch.bfloat16 if dev == "cuda" else torch.float16
    p = 0.1
    thresh, inv = sp._dropout_threshold(p)
    m, k = (256, 4096) if not args.smoke_cpu else (64, 512)
    out = []
    seeds = [11, 12] + [sp._draw_seed() for _ in range(4)]
    masks = {}
    for seed in seeds:
        got = sp.lora_dropout_mask(m, k, p, seed, dev).cpu().numpy()
        ref = sp.lora_dropout_mask_reference(m, k, p, seed)
        masks[seed] = got
        row = {"seed": seed, "equal_to_numpy": float((got == ref).mean()), "kept": float(got.mean()),
               "kept_numpy": float(ref.mean())}
        # the forward kernel's mask, read through one-hot rows of A (8 columns per call)
        x = torch.ones(m, k, device=dev, dtype=dt)
        cols = list(range(0, k, max(1, k // 64)))[:64]
        agree = []
        for quant in ((False, True) if dev == "cuda" else (False,)):
            for i in range(0, len(cols), 8):
                a = torch.zeros(8, k, device=dev, dtype=dt)
                for j, c in enumerate(cols[i:i + 8]):
                    a[j, c] = 1
                xa = sp.lora_fwd(x, a, p, seed, quant=quant)
                xa = xa[0] if quant else xa
                fm = (xa.float().cpu().numpy() > 0.5)[:, : len(cols[i:i + 8])]
                agree.append(float((fm == got[:, cols[i:i + 8]]).mean()))
        row["fwd_kernel_equal_to_mask_kernel"] = min(agree)
        gx = torch.zeros(m, k, device=dev, dtype=dt)
        sp.lora_bwd(x, torch.ones(m, 8, device=dev), torch.ones(8, k, device=dev, dtype=dt), gx, 1.0, p, seed,
                    need_ga=False)
        row["bwd_kernel_equal_to_mask_kernel"] = float(((gx.float().cpu().numpy() != 0) == got).mean())
        out.append(row)
        print("maskcheck", json.dumps(row), flush=True)
    pairs = []
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            pairs.append(float((masks[seeds[i]] == masks[seeds[j]]).mean()))
    print("maskcheck pairwise agreement (iid: 0.82)", ["%.4f" % v for v in pairs], flush=True)
    res["maskcheck"] = {"rows": out, "pairwise_agreement": pairs}


def build(sp, args, layers, dropout=0.1, liger=True, fp8=True, ckpt=True, kernels=True, b_init=0.0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if args.smoke_cpu:
        cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=211, use_cache=False)
        dt = torch.float16
    else:
        cfg = llama8b_config(layers)
        dt = torch.bfloat16
    with torch.device(args.dev):
        model = LlamaForCausalLM._from_config(cfg, dtype=dt, attn_implementation="sdpa")
    if ckpt:
        model.gradient_checkpointing_enable()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=dropout, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    if b_init:
        with torch.no_grad():
            for n, prm in model.named_parameters():
                if "lora_B" in n:
                    prm.normal_(0, b_init)
    packed = False
    if args.dev == "cuda":
        model = sp.apply_speedups(model, device="cuda", enable=True, liger=liger, fp8=fp8, lora_kernels=kernels)
        packed = sp.describe(model).get("attention") == sp.VARLEN_ATTN_NAME
    else:
        sp.fuse_lora_linears(model, kernels=kernels)
    model.train()
    return model, cfg, packed


def _autocast(args):
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if args.dev == "cuda" else contextlib.nullcontext()


def set_kernels(sp, model, on: bool):
    sp.fuse_lora_linears(model, kernels=on)
    sp._QUANT_SHARING[0] = on
    sp.clear_quant_cache()


def step_check(sp, args, res):
    import torch

    combos = [
        {"name": "full pipeline (liger, fp8, ckpt)"},
        {"name": "no fp8", "fp8": False},
        {"name": "no liger", "liger": False},
        {"name": "no checkpointing", "ckpt": False},
    ]
    if args.smoke_cpu:
        combos = [{"name": "cpu interpreter (ckpt)"}, {"name": "cpu interpreter, no ckpt", "ckpt": False}]
    out = []
    for c in combos:
        kw = {k: v for k, v in c.items() if k != "name"}
        model, cfg, packed = build(sp, args, 2, b_init=0.01, **kw)
        bsz, seq = (4, 1024) if not args.smoke_cpu else (2, 64)
        g = torch.Generator(device=args.dev).manual_seed(1)
        ids = torch.randint(0, cfg.vocab_size, (bsz, seq), device=args.dev, generator=g)
        batch = sp.flatten_batch(ids) if packed else {"input_ids": ids, "labels": ids}

        def one(kernels: bool, ref_mask: bool):
            set_kernels(sp, model, kernels)
            model.zero_grad(set_to_none=True)
            torch.manual_seed(123)
            ctx = kernel_mask_dropout(sp) if ref_mask else contextlib.nullcontext()
            seeds = []
            orig = sp._draw_seed

            def draw():
                s = orig()
                seeds.append(s)
                return s

            sp._draw_seed = draw
            try:
                with ctx:  # the checkpoint recompute (in backward) must draw the same masks
                    with _autocast(args):
                        loss = model(**batch).loss
                    loss.backward()
            finally:
                sp._draw_seed = orig
            grads = {n: prm.grad.float().clone() for n, prm in model.named_parameters() if prm.grad is not None}
            return float(loss), grads, seeds

        lk, gk, sk = one(True, False)
        lr, gr, sr = one(False, True)
        lt, gt, _ = one(False, False)
        rel = {n: float((gk[n] - gr[n]).norm() / gr[n].norm().clamp(min=1e-30)) for n in gr}
        rel_t = {n: float((gt[n] - gr[n]).norm() / gr[n].norm().clamp(min=1e-30)) for n in gr}
        rel_kt = {n: float((gk[n] - gt[n]).norm() / gt[n].norm().clamp(min=1e-30)) for n in gr}
        worst = sorted(rel.items(), key=lambda kv: -kv[1])[:3]
        by_type = {}
        for t in TARGETS:
            vals = [v for n, v in rel.items() if f".{t}." in n]
            by_type[t] = round(float(torch.tensor(vals).median()), 4) if vals else None
        row = {"combo": c["name"], "loss_kernel": lk, "loss_torch_kernel_mask": lr, "loss_torch": lt,
               "seeds_kernel": len(sk), "seeds_ref": len(sr), "same_seeds": sk == sr,
               "recompute_redraws_forward_seeds": (sorted(sk[: len(sk) // 2]) == sorted(sk[len(sk) // 2:]))
               if sk else None,
               "median_rel_grad_kernel_vs_ref": float(torch.tensor(list(rel.values())).median()),
               "median_rel_grad_torch_vs_ref (other mask)": float(torch.tensor(list(rel_t.values())).median()),
               "median_rel_grad_kernel_vs_torch": float(torch.tensor(list(rel_kt.values())).median()),
               "kernel_vs_ref_by_module": by_type, "worst": worst}
        print("step", json.dumps(row), flush=True)
        out.append(row)
        del model
        if args.dev == "cuda":
            torch.cuda.empty_cache()
    res["step"] = out


def curve(sp, args, res):
    import torch

    if not args.curve_data or not Path(args.curve_data).exists():
        print("curve: no --curve-data, skipped", flush=True)
        return
    tokens = torch.load(args.curve_data).long()
    seq, bsz = (1024, 8) if not args.smoke_cpu else (64, 2)
    rows = tokens[: tokens.numel() // seq * seq].view(-1, seq)
    order = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))
    out = {}
    for name in args.curve_variants.split(","):
        base_name, _, opt_s = name.partition("@")  # e.g. kernels@rounds10, kernels@hash
        kernels = base_name == "kernels"
        sp.PHILOX_ROUNDS[0] = 10 if "rounds10" in opt_s else 7
        orig_draw = sp._draw_seed
        if "hash" in opt_s:  # seeds through a 64-bit mixer (splitmix64), keeping 31 bits
            def hashed(_orig=orig_draw):
                z = (_orig() + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
                return int((z ^ (z >> 31)) & 0x7FFFFFFF)

            sp._draw_seed = hashed
        model, cfg, packed = build(sp, args, args.curve_layers, kernels=kernels)
        set_kernels(sp, model, kernels)
        params = [prm for prm in model.parameters() if prm.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4, fused=args.dev == "cuda")
        losses = []
        ctx = kernel_mask_dropout(sp) if base_name == "torch_kernel_mask" else contextlib.nullcontext()
        t0 = time.time()
        with ctx:
            for i in range(args.curve_steps):
                idx = order[torch.arange(i * bsz, (i + 1) * bsz) % order.numel()]
                ids = (rows[idx] % cfg.vocab_size).to(args.dev)
                batch = sp.flatten_batch(ids) if packed else {"input_ids": ids, "labels": ids}
                with _autocast(args):
                    loss = model(**batch).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss))
        sp._draw_seed = orig_draw
        sp.PHILOX_ROUNDS[0] = 7
        out[name] = losses
        means = [sum(losses[j:j + 10]) / len(losses[j:j + 10]) for j in range(0, len(losses), 10)]
        print(f"curve {name}: {time.time() - t0:.0f}s, means per 10 steps {['%.3f' % v for v in means]}", flush=True)
        del model, opt
        if args.dev == "cuda":
            torch.cuda.empty_cache()
    res["curve"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--parts", default="stats,step,curve")
    ap.add_argument("--curve-data", default=str(ROOT / ".device-wheels" / "mathdial_test_smollm2.pt"))
    ap.add_argument("--curve-steps", type=int, default=40)
    ap.add_argument("--curve-layers", type=int, default=8)
    ap.add_argument("--curve-variants", default="torch,kernels,torch_kernel_mask")
    ap.add_argument("--smoke-cpu", action="store_true")
    args = ap.parse_args()
    import torch

    args.dev = "cuda" if torch.cuda.is_available() and not args.smoke_cpu else "cpu"
    sp = _sp()
    res = {"torch": torch.__version__}
    for part in args.parts.split(","):
        t0 = time.time()
        {"stats": stats, "step": step_check, "curve": curve, "maskcheck": maskcheck}[part](sp, args, res)
        print(f"[{part}] {time.time() - t0:.0f}s", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "diag_lora_dropout.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
