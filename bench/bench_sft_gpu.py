"""SFT throughput on the GPU: plain transformers+peft vs the pipeline's speed-ups, side by side.

Model: Llama-3.1-8B shape built from a config (no hub), random weights, bf16; LoRA r=8,
alpha 32, dropout 0.1 on q,k,v,o,gate,up,down (the recipe); seq 3072; AdamW on the
adapters; bf16 autocast as HF Trainer's ``bf16=True``; gradient checkpointing on in
every variant. Each variant runs in its own process (Liger patches module globals), at
each batch size: ``--warmup`` untimed steps, then ``--steps`` timed steps (CUDA
synchronised wall clock). Peak memory is ``torch.cuda.max_memory_allocated`` over the
warm-up and timed steps (weights included).

Variants:
  baseline    plain transformers + peft: SDPA attention, HF RMSNorm/MLP/RoPE, HF
              cross-entropy on materialised fp32 logits, [B, L] batches.
  liger       baseline + Liger RMSNorm/SwiGLU/RoPE/fused linear cross-entropy.
  liger_lora  liger + the fused LoRA linear of training/speedups.py.
  pipeline    ``apply_speedups(model, device="cuda", enable=True)`` + its packing:
              each batch is flattened into one padding-free row (``flatten_batch``:
              position_ids restart per sequence, cu_seq_lens) and attention runs on
              PyTorch's FlashAttention varlen kernel.
              Full-length rows pack into sequences of equal length, which the
              attention runs as a [B, L] batch through SDPA (exact, faster there).
  pipeline_compile  pipeline + torch.compile of each decoder layer (no gain measured).
  Since issue 14 ``pipeline`` also has FP8 frozen base weights, cuDNN-first SDPA and the Triton transpose
  of the FP8 weights (the defaults of apply_speedups); modifiers joined with '+': nofp8, nocudnn,
  nolk (the torch fused LoRA path instead of the Triton side path with in-kernel dropout, which is the
  default since issue 14's third session; lk names it explicitly), notr (FP8 weight transpose of the
  input-gradient GEMM by
  torch's strided copy instead of the Triton tile copy), selN (N layers skip the checkpoint
  recompute), saN (N checkpointed layers keep the attention op's outputs, selective activation
  checkpointing: their recompute skips the attention), mbM (micro-batches of M with gradient accumulation: equal tokens per step), compile.
  e.g. pipeline+nofp8+nocudnn = the pipeline of issue 4; pipeline+mb2+sel8.

DPO (``--dpo``): batch = sequences, first half chosen, second half rejected; policy = LoRA, reference =
the same model with the adapter disabled (no_grad). Baseline log-probs: full logits + TRL-style per-row
log_softmax; pipeline: packed row, hidden states -> speedups.chunked_token_logps.
Loss curve (``--curve-data``, made by ``--make-curve-data``): N steps on real tokens, same rows and order
for every variant (bench/results/sft_loss_curve_h200.md).

Data: ``full`` = every example 3072 tokens (the issue's setting: nothing to pad);
``mixed`` (``--mixed-variants``, ``--mixed-batches``) = examples of random length in
[256, 3072]: the baseline right-pads them to the longest of the micro-batch (attention
mask, labels -100 on padding), the pipeline packs them padding-free into one row and
runs FlashAttention varlen. tokens/s counts real (non-pad) tokens only, and MFU counts the
attention FLOPs of the real sequence lengths (6*L*d*sum(len^2) per step).

FLOPs per trained token (N = weights in matmuls = 32 layers' q,k,v,o,gate,up,down + lm_head
= 7.50e9; L = layers, d = 4096, s = 3072; causal attention fwd = 2*d*s per token and layer,
fwd+bwd = 3x):
  MFU(6N)   = (6*N + 6*L*d*s) * tokens/s / 989e12     (the usual convention)
  MFU(LoRA) = (4*N + 6*L*d*s + 6*N_lora) * tokens/s / 989e12
              (what LoRA needs: frozen base forward 2N + activation grads 2N, no weight
              grads; the gradient-checkpointing recompute is not counted in either)
989 TFLOP/s = H100/H200 SXM bf16 dense peak (FP8 rows are measured against it too).

Usage (on the GPU machine):
  python bench/bench_sft_gpu.py --variants baseline,liger,liger_lora,pipeline --batches 1,6 \
      --mixed-variants baseline,pipeline --mixed-batches 6 --warmup 2 --steps 6 --out $OUT
  python bench/bench_sft_gpu.py --smoke-cpu --seq 32 --batches 1,3 --mixed-batches 3   # CPU plumbing check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = 989.0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_speedups():
    """training/speedups.py by path (training/__init__ may import things this machine lacks)."""
    spec = importlib.util.spec_from_file_location("tutorstack_training_speedups", ROOT / "training" / "speedups.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def flops_per_token(layers: int, seq: int, rank: int = 8) -> dict[str, float]:
    d, kv, ff, vocab = 4096, 1024, 14336, 128256
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * ff
    n = layers * per_layer + d * vocab
    lora_per_layer = rank * ((d + d) + (d + kv) * 2 + (d + d) + (d + ff) * 2 + (ff + d))
    n_lora = layers * lora_per_layer
    attn = 6 * layers * d * seq
    return {"N": n, "N_lora": n_lora, "6N": 6 * n + attn, "lora": 4 * n + attn + 6 * n_lora}


# ----------------------------------------------------------------------------- child


def parse_variant(name: str) -> tuple[str, dict]:
    """'pipeline+nofp8+nocudnn+sel8+mb2' -> ('pipeline', {...}). Modifiers (pipeline only):
    nofp8 (bf16 base weights), nocudnn (SDPA's default order), selN (N layers skip the checkpoint
    recompute), saN (N more checkpointed layers keep the attention outputs: their recompute skips it), mbM (micro-batches of M with gradient accumulation: equal tokens per step), compile."""
    parts = name.split("+")
    mods = {"fp8": True, "cudnn": True, "sel": None, "sa": None, "mb": 0, "compile": False, "lk": True, "tr": True}
    for m in parts[1:]:
        if m == "nofp8":
            mods["fp8"] = False
        elif m == "nolk":
            mods["lk"] = False
        elif m == "lk":
            mods["lk"] = True
        elif m == "notr":
            mods["tr"] = False
        elif m == "nocudnn":
            mods["cudnn"] = False
        elif m == "compile":
            mods["compile"] = True
        elif m.startswith("sel"):
            mods["sel"] = int(m[3:])
        elif m.startswith("mb"):
            mods["mb"] = int(m[2:])
        elif m.startswith("sa") and m[2:].isdigit():
            mods["sa"] = int(m[2:])
        else:
            raise SystemExit(f"unknown variant modifier {m!r} in {name!r}")
    if parts[0] == "pipeline_compile":
        parts[0], mods["compile"] = "pipeline", True
    return parts[0], mods



def llama8b_config(layers: int):
    """Llama-3.1-8B's shape (random weights) with `layers` decoder layers."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
                       rope_theta=500000.0, hidden_act="silu", tie_word_embeddings=False, use_cache=False)


def child(args) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    variant = args.child
    base_name, mods = parse_variant(variant)
    sp = load_speedups()
    sp.TRITON_TRANSPOSE[0] = mods["tr"]
    torch.manual_seed(0)
    cfg = llama8b_config(args.layers)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke_cpu:  # tiny shapes, CPU: checks the script's plumbing, measures nothing
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=101, use_cache=False)
        dev = "cpu"
    t0 = time.time()
    with torch.device(dev):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.config.use_cache = False
    model.gradient_checkpointing_enable()
    lcfg = LoraConfig(r=8, lora_alpha=32, lora_dropout=args.lora_dropout, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    packed = False
    if base_name in ("liger", "liger_lora"):
        model = sp.apply_speedups(
            model, device="cuda", enable=True, liger=True, fused_lora=(base_name == "liger_lora"),
            padding_free_attention=False, fp8=False, cudnn_attention=False, lora_kernels=False,
        )
    elif base_name.startswith("pipeline"):
        model = sp.apply_speedups(
            model, device="cuda", enable=True, compile_layers=mods["compile"], fp8=mods["fp8"],
            cudnn_attention=mods["cudnn"], unchecked_layers=mods["sel"], lora_kernels=mods["lk"],
            saved_attention_layers=mods["sa"],
        )
        packed = sp.describe(model).get("attention") == sp.VARLEN_ATTN_NAME
        if args.smoke_cpu and sp.register_varlen_attention() and sp._set_attn(model, sp.VARLEN_ATTN_NAME):
            packed = True
    applied = sp.describe(model)
    model.train()
    build_s = time.time() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, fused=(dev == "cuda"))
    vocab = cfg.vocab_size
    print(f"[{variant}] built in {build_s:.1f}s, applied={applied}, packed={packed}, "
          f"trainable={sum(p.numel() for p in params)/1e6:.1f}M", flush=True)

    def make_batch(bsz: int, gen: torch.Generator, data: str = "full"):
        """-> (model kwargs, real tokens, sum of squared sequence lengths)."""
        if data == "full":
            lens = [args.seq] * bsz
        else:  # mixed: bsz examples of uniform random length in [256, seq], right-padded unless packed
            lens = torch.randint(min(256, args.seq // 2), args.seq + 1, (bsz,), generator=cpu_gen).tolist()
        width = max(lens)
        ids = torch.randint(0, vocab, (bsz, width), generator=gen, device=dev)
        mask = torch.zeros(bsz, width, dtype=torch.long, device=dev)
        for i, n in enumerate(lens):
            mask[i, :n] = 1
        real, sq = sum(lens), sum(n * n for n in lens)
        if packed:
            return sp.flatten_batch(ids, attention_mask=None if data == "full" else mask), real, sq
        if data == "full":
            return {"input_ids": ids, "labels": ids}, real, sq
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}, real, sq

    cpu_gen = torch.Generator().manual_seed(7)

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()
    fl = flops_per_token(args.layers, args.seq)
    d_model, n_layers = 4096, args.layers


    hf = model.get_base_model()
    inner, lm_head = hf.model, hf.lm_head

    def dpo_logps(batch):
        """Summed log-probs per sequence. Plain: full logits + TRL-style per-row log_softmax.
        Pipeline: hidden states of one packed row, lm_head + log-softmax chunk by chunk."""
        if "cu_seq_lens_q" in batch:
            kw = {k: v for k, v in batch.items() if k != "labels"}
            hidden = inner(**kw).last_hidden_state[0]  # [T, d]
            lab = batch["labels"][0]
            shifted = torch.cat([lab[1:], lab.new_full((1,), -100)])
            tok = sp.chunked_token_logps(hidden, lm_head.weight, shifted)
            cu = batch["cu_seq_lens_q"].long()
            seq = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=tok.device), cu[1:] - cu[:-1])
            return torch.zeros(cu.numel() - 1, device=tok.device, dtype=tok.dtype).index_add_(0, seq, tok)
        kw = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**kw).logits[:, :-1]
        lab = batch["labels"][:, 1:]
        rows = []
        for lg, lb in zip(logits, lab):  # TRL's selective_log_softmax for bf16: one row at a time
            lp = torch.log_softmax(lg.float(), dim=-1).gather(-1, lb.clamp(min=0)[:, None]).squeeze(-1)
            rows.append((lp * (lb >= 0)).sum())
        return torch.stack(rows)

    def dpo_loss(batch):
        pol = dpo_logps(batch)
        with torch.no_grad(), model.disable_adapter():
            ref = dpo_logps(batch)
        n = pol.numel() // 2  # first half chosen, second half rejected
        margin = (pol[:n] - ref[:n]) - (pol[n:] - ref[n:])
        return -torch.nn.functional.logsigmoid(args.beta * margin).mean()

    def forward_loss(batch):
        with torch.autocast(dev, dtype=torch.bfloat16):
            return dpo_loss(batch) if args.dpo else model(**batch).loss

    def step(batch):
        parts = batch if isinstance(batch, list) else [batch]
        total = 0.0
        for part in parts:  # micro-batches of one optimiser step (equal tokens per step)
            loss = forward_loss(part)
            (loss / len(parts)).backward()
            total = total + loss.detach() / len(parts)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    # numerical check: same weights (same seed), same tokens, no dropout, no grad
    g = torch.Generator(device=dev).manual_seed(1234)
    check = make_batch(2, g)[0]
    model.eval()
    with torch.no_grad():
        if args.dpo:  # policy == reference at init (LoRA B = 0): compare the mean token log-prob instead
            with torch.autocast(dev, dtype=torch.bfloat16):
                check_loss = float(-dpo_logps(check).sum() / (2 * (args.seq - 1)))
        else:
            check_loss = float(forward_loss(check))
    model.train()
    del check

    if args.curve_data:  # loss curve on real tokens: same rows, same order for every variant
        tokens_all = torch.load(args.curve_data).long()
        rows_all = tokens_all[: tokens_all.numel() // args.seq * args.seq].view(-1, args.seq)
        order = torch.randperm(rows_all.shape[0], generator=torch.Generator().manual_seed(0))
        bsz = args.batches[0]
        for group in opt.param_groups:
            group["lr"] = args.lr
        losses, t1 = [], time.perf_counter()
        for i in range(args.curve_steps):
            idx = order[torch.arange(i * bsz, (i + 1) * bsz) % order.numel()]
            ids = (rows_all[idx] % vocab).to(dev)  # (smoke model: tiny vocab)
            batch = sp.flatten_batch(ids) if packed else {"input_ids": ids, "labels": ids}
            losses.append(step(batch))
        sync()
        dt = time.perf_counter() - t1
        print("RESULT " + json.dumps({"variant": variant, "data": "curve", "batch": bsz, "micro_batch": bsz,
                                      "seq": args.seq, "ok": True, "applied": applied, "check_loss": check_loss,
                                      "losses": [float(x) for x in losses], "step_s": dt / args.curve_steps,
                                      "tokens_per_s": bsz * args.seq * args.curve_steps / dt,
                                      "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0,
                                      "mfu_6n": 0.0, "mfu_lora": 0.0}), flush=True)
        return

    scenarios = [("full", b) for b in args.batches]
    if variant in args.mixed_variants:
        scenarios += [("mixed", b) for b in args.mixed_batches]
    for data, bsz in scenarios:
        g = torch.Generator(device=dev).manual_seed(bsz)
        cpu_gen.manual_seed(100 + bsz)
        mb = mods["mb"] or bsz
        if bsz % mb:
            mb = bsz
        batches = []
        for _ in range(2):
            parts = [make_batch(mb, g, data) for _ in range(bsz // mb)]
            batches.append(([p[0] for p in parts] if len(parts) > 1 else parts[0][0],
                            sum(p[1] for p in parts), sum(p[2] for p in parts)))
        sync()
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        res = {"variant": variant, "data": data, "batch": bsz, "micro_batch": mb, "dpo": args.dpo, "seq": args.seq,
               "applied": applied,
               "packed": packed, "check_loss": check_loss}
        try:
            tw = time.time()
            for i in range(args.warmup):
                step(batches[i % 2][0])
            sync()
            warm_s = time.time() - tw
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for i in range(2):
                        step(batches[i % 2][0])
                    sync()
                table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40)
                table += "\n" + prof.key_averages().table(sort_by="cpu_time_total", row_limit=30)
                Path(args.out, f"prof_{variant}_{data}_{bsz}.txt").write_text(table)
            losses = []
            t1 = time.perf_counter()
            for i in range(args.steps):
                losses.append(step(batches[i % 2][0]))
            sync()
            dt = time.perf_counter() - t1
            tokens = sum(batches[i % 2][1] for i in range(args.steps))
            sq = sum(batches[i % 2][2] for i in range(args.steps))
            attn = 6 * n_layers * d_model * sq
            flops_6n = 6 * fl["N"] * tokens + attn
            flops_lora = 4 * fl["N"] * tokens + attn + 6 * fl["N_lora"] * tokens
            if args.dpo:  # + the reference forward (adapter disabled): 2N per token + causal attention fwd
                flops_6n += 2 * fl["N"] * tokens + attn / 3
                flops_lora += 2 * fl["N"] * tokens + attn / 3
            res.update(
                ok=True,
                tokens=tokens,
                tokens_per_s=tokens / dt,
                step_s=dt / args.steps,
                mfu_6n=flops_6n / dt / (PEAK_TFLOPS * 1e12),
                mfu_lora=flops_lora / dt / (PEAK_TFLOPS * 1e12),
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0,
                reserved_gib=torch.cuda.max_memory_reserved() / 2**30 if dev == "cuda" else 0.0,
                warmup_s=warm_s,
                losses=[float(x) for x in losses],
            )
        except torch.OutOfMemoryError as exc:
            res.update(ok=False, error=f"OOM: {str(exc)[:200]}", peak_gib=torch.cuda.max_memory_allocated() / 2**30)
        opt.zero_grad(set_to_none=True)
        del batches
        print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------ kernel micro-bench


def kernel_bench(args) -> None:
    """The LoRA side path of one projection at T = batch x seq tokens: torch ops (the fused path before
    the Triton kernels) vs the Triton kernels (Philox rounds, no-dropout floor, LoRA output add)."""
    import torch
    from triton.testing import do_bench

    sp = load_speedups()
    T, r, p, s = args.batches[0] * args.seq, 8, args.lora_dropout, 4.0
    out = [f"kernel micro-bench, T={T}, r={r}, p={p}: ms per call (median)"]
    for K, N in ((4096, 4096), (14336, 4096)):
        x = torch.randn(T, K, device="cuda", dtype=torch.bfloat16)
        a = (torch.randn(r, K, device="cuda") * 0.02).to(torch.bfloat16)
        gxa = torch.randn(T, r, device="cuda")
        gx = torch.randn(T, K, device="cuda", dtype=torch.bfloat16)

        def torch_fwd():
            q, sc = sp.quantize_rowwise_fp8(x)
            xd, mask = torch.native_dropout(x, p, True)
            return torch.mm(xd, a.t()), mask

        xd, mask = torch.native_dropout(x, p, True)
        g16 = gxa.to(torch.bfloat16)

        def torch_bwd():
            ga = torch.mm(g16.t(), xd)
            gx.add_(torch.mm(g16, a).mul_(mask), alpha=s / (1 - p))
            return ga

        t_tf, t_tb = do_bench(torch_fwd), do_bench(torch_bwd)
        out.append(f"K={K}: torch fwd (quant + dropout + xA) {t_tf:.3f}, torch bwd (dA + masked gx term) {t_tb:.3f}")
        for rounds in (10, 7):
            sp.PHILOX_ROUNDS[0] = rounds
            t = do_bench(lambda: sp.lora_fwd(x, a, p, 123, quant=True))
            t2 = do_bench(lambda: sp.lora_fwd(x, a, p, 123, quant=False))
            t3 = do_bench(lambda: sp.lora_bwd(x, gxa, a, gx, s, p, 123))
            out.append(f"  triton, Philox {rounds} rounds: fwd quant+xA {t:.3f}, xA only {t2:.3f}; bwd {t3:.3f}")
        sp.PHILOX_ROUNDS[0] = 10
        t2 = do_bench(lambda: sp.lora_fwd(x, a, 0.0, 123, quant=False))
        t3 = do_bench(lambda: sp.lora_bwd(x, gxa, a, gx, s, 0.0, 123))
        out.append(f"  triton, no dropout (floor): xA only {t2:.3f}; bwd {t3:.3f}")
        # the LoRA output term: out [T, N=K] += s * xa B^T, cuBLAS addmm_ vs the Triton streaming kernel
        o = torch.randn(T, K, device="cuda", dtype=torch.bfloat16)
        xa16 = gxa.to(torch.bfloat16)
        bt = (torch.randn(r, K, device="cuda") * 0.02).to(torch.bfloat16)
        t_c = do_bench(lambda: o.addmm_(xa16, bt, alpha=s))
        line = f"  LoRA output add, N={K}: cuBLAS addmm_ {t_c:.3f}"
        for bm, bk, w in ((32, 256, 4), (64, 128, 4), (64, 256, 8), (128, 128, 8)):
            cfg = {"BM": bm, "BK": bk, "num_warps": w}
            t = do_bench(lambda: sp.lora_bwd(o, xa16, bt, o, s, need_ga=False, cfg=cfg))
            line += f"; triton {bm},{bk},{w} {t:.3f}"
        out.append(line)
        torch.cuda.empty_cache()
    text = "\n".join(out)
    print(text, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "kernel_bench.txt").write_text(text + "\n")


def kernel_scan(args) -> None:
    """Launch configurations of the dropout kernels (forward x_drop A^T, backward dA + masked input gradient) at
    T = batch x seq, weighted by their calls per decoder layer and step (forward twice: checkpoint recompute).
    Prints ``export TUTORSTACK_LORA_FWD_CFG=... TUTORSTACK_LORA_BWD_CFG=...`` for the fastest."""
    import torch
    from triton.testing import do_bench

    sp = load_speedups()
    T, r, p, s = args.batches[0] * args.seq, 8, args.lora_dropout, 4.0
    data = {}
    for K in (4096, 14336):
        x = torch.randn(T, K, device="cuda", dtype=torch.bfloat16)
        a = (torch.randn(r, K, device="cuda") * 0.02).to(torch.bfloat16)
        gxa = torch.randn(T, r, device="cuda")
        gx = torch.randn(T, K, device="cuda", dtype=torch.bfloat16)
        data[K] = (x, a, gxa, gx)
    lines = [f"kernel scan, T={T}, p={p}, Philox rounds {sp.PHILOX_ROUNDS[0]} (ms per step-layer, weighted)"]
    best = {}
    fwd_cfgs = [(32, 128, 4), (32, 128, 8), (64, 128, 4), (64, 128, 8), (32, 256, 4), (32, 256, 8), (16, 128, 4)]
    bwd_cfgs = [(32, 256, 4), (32, 256, 8), (64, 256, 8), (32, 128, 4), (64, 128, 4), (16, 256, 4), (64, 128, 8)]
    for kind, cfgs in (("fwd", fwd_cfgs), ("bwd", bwd_cfgs)):
        for bm, bk, w in cfgs:
            cfg = {"BM": bm, "BK": bk, "num_warps": w}
            try:
                if kind == "fwd":
                    tq4 = do_bench(lambda: sp.lora_fwd(data[4096][0], data[4096][1], p, 123, quant=True, cfg=cfg))
                    tn4 = do_bench(lambda: sp.lora_fwd(data[4096][0], data[4096][1], p, 123, cfg=cfg))
                    tq14 = do_bench(lambda: sp.lora_fwd(data[14336][0], data[14336][1], p, 123, quant=True, cfg=cfg))
                    score = 2 * (3 * tq4 + 3 * tn4 + tq14)
                    parts = f"q4096 {tq4:.3f} n4096 {tn4:.3f} q14336 {tq14:.3f}"
                else:
                    tb4 = do_bench(lambda: sp.lora_bwd(data[4096][0], data[4096][2], data[4096][1], data[4096][3],
                                                       s, p, 123, cfg=cfg))
                    tb14 = do_bench(lambda: sp.lora_bwd(data[14336][0], data[14336][2], data[14336][1], data[14336][3],
                                                        s, p, 123, cfg=cfg))
                    score = 6 * tb4 + tb14
                    parts = f"b4096 {tb4:.3f} b14336 {tb14:.3f}"
            except Exception as exc:  # a configuration that does not compile or fit
                lines.append(f"  {kind} {bm},{bk},{w}: failed ({str(exc)[:80]})")
                continue
            lines.append(f"  {kind} {bm},{bk},{w}: {score:.3f} ({parts})")
            if kind not in best or score < best[kind][0]:
                best[kind] = (score, f"{bm},{bk},{w}")
    text = "\n".join(lines)
    print(text, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "kernel_scan.txt").write_text(text + "\n")
    print(f"export TUTORSTACK_LORA_FWD_CFG={best['fwd'][1]} TUTORSTACK_LORA_BWD_CFG={best['bwd'][1]}", flush=True)


# ------------------------------------------------------------------------ orchestrator


def fmt_table(rows: list[dict]) -> str:
    base = {(r["data"], r["batch"]): r for r in rows if r["variant"] == "baseline" and r.get("ok")}
    out = [
        "| data | batch | micro | variant | tokens/s | step s | peak GiB | MFU 6N | MFU LoRA | tok/s vs baseline | peak vs baseline | check loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["data"] != "full", r["batch"])):
        head = f"| {r['data']} | {r['batch']} | {r.get('micro_batch', r['batch'])} | {r['variant']} |"
        if not r.get("ok"):
            out.append(f"{head} {r.get('error', 'failed')[:60]} | | {r.get('peak_gib', 0):.1f} | | | | | |")
            continue
        b = base.get((r["data"], r["batch"]))
        tps = r["tokens_per_s"]
        ratio = f"{tps / b['tokens_per_s']:.2f}x" if b else "-"
        mem = f"{r['peak_gib'] / b['peak_gib']:.0%}" if b and b["peak_gib"] > 0 else "-"
        out.append(
            f"{head} {tps:,.0f} | {r['step_s']:.3f} | {r['peak_gib']:.1f} | {r['mfu_6n']:.1%} | "
            f"{r['mfu_lora']:.1%} | {ratio} | {mem} | {r.get('check_loss', float('nan')):.4f} |"
        )
    return "\n".join(out)


def make_curve_data(out: str, tokenizer_json: str, source: str = "../shared/data/mathdial/test.jsonl") -> None:
    """Real tokens for the loss curve: every MathDial dialogue as 'Question: ...' + its turns, one 1-D int32 tensor."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    ids: list[int] = []
    for line in Path(source).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        text = "Question: " + rec["question"] + "\n" + rec.get("conversation", "").replace("|EOM|", "\n") + "\n\n"
        ids.extend(tok.encode(text).ids)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.tensor(ids, dtype=torch.int32), out)
    print(f"{len(ids)} tokens -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="baseline,pipeline")
    ap.add_argument("--batches", default="1,6")
    ap.add_argument("--seq", type=int, default=3072)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--mixed-variants", default="baseline,pipeline",
                    help="variants that also run the mixed-length data (examples of random length, padded or packed)")
    ap.add_argument("--mixed-batches", default="6")
    ap.add_argument("--budget-s", type=float, default=540.0, help="skip variants that would start after this")
    ap.add_argument("--child-timeout-s", type=float, default=300.0)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--smoke-cpu", action="store_true", help="tiny model on the CPU: plumbing check only")
    ap.add_argument("--profile", action="store_true", help="write a torch.profiler table per scenario to --out")
    ap.add_argument("--dpo", action="store_true", help="DPO steps: batch = sequences (half chosen, half rejected); "
                    "policy = LoRA, reference = the same model with the adapter disabled")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--kernels", action="store_true", help="micro-bench of the Triton LoRA kernels vs torch ops "
                    "(writes kernel_bench.txt to --out) and exit")
    ap.add_argument("--kernel-scan", action="store_true", help="time launch configurations of the dropout "
                    "kernels at --batches[0] x --seq (writes kernel_scan.txt) and print the fastest as env settings")
    ap.add_argument("--tag", default="", help="suffix of the output files (e.g. dpo)")
    ap.add_argument("--curve-data", default="", help="token ids (torch.save of a 1-D int tensor): run a loss curve "
                    "of --curve-steps steps at batch --batches[0] on these real tokens instead of the timing")
    ap.add_argument("--curve-steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--make-curve-data", default="", metavar="OUT.pt",
                    help="tokenise MathDial (../shared/data/mathdial/test.jsonl) with --tokenizer into OUT.pt and exit")
    ap.add_argument("--tokenizer", default=str(Path.home() / ".cache/tutorstack/models/SmolLM2-135M-Instruct/tokenizer.json"))
    args = ap.parse_args()
    if args.make_curve_data:
        make_curve_data(args.make_curve_data, args.tokenizer)
        return
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.mixed_batches = [int(b) for b in str(args.mixed_batches).split(",") if b]
    args.mixed_variants = [v for v in str(args.mixed_variants).split(",") if v]
    if args.child:
        child(args)
        return
    if args.kernels:
        kernel_bench(args)
        return
    if args.kernel_scan:
        kernel_scan(args)
        return

    import torch

    t_start = time.time()
    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    from importlib import metadata

    for name in ("transformers", "peft", "liger-kernel", "triton", "flash-attn"):
        try:
            env[name] = metadata.version(name)
        except Exception:
            env[name] = "absent"
    try:
        import inspect

        from torch.nn.attention.varlen import varlen_attn

        env["varlen_attn"] = str(inspect.signature(varlen_attn))[:300]
    except Exception as exc:
        env["varlen_attn"] = f"absent ({exc})"
    print("ENV " + json.dumps(env), flush=True)
    rows: list[dict] = []
    for variant in args.variants.split(","):
        left = args.budget_s - (time.time() - t_start)
        if left < 60:
            print(f"[{variant}] skipped: {left:.0f}s of budget left", flush=True)
            continue
        cmd = [sys.executable, __file__, "--child", variant, "--batches", ",".join(map(str, args.batches)),
               "--seq", str(args.seq), "--layers", str(args.layers), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--lora-dropout", str(args.lora_dropout),
               "--mixed-variants", ",".join(args.mixed_variants),
               "--mixed-batches", ",".join(map(str, args.mixed_batches)), "--beta", str(args.beta),
               "--curve-data", args.curve_data, "--curve-steps", str(args.curve_steps), "--lr", str(args.lr)] + (
            ["--dpo"] if args.dpo else []) + (["--smoke-cpu"] if args.smoke_cpu else []) + (
            ["--profile", "--out", str(args.out)] if args.profile else [])
        env_c = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True", PYTHONUNBUFFERED="1")
        got = []
        try:
            proc = subprocess.run(cmd, env=env_c, capture_output=True, text=True,
                                  timeout=min(args.child_timeout_s, left))
            text = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            text += "\nTIMEOUT"
        for line in text.splitlines():
            if line.startswith("RESULT "):
                got.append(json.loads(line[7:]))
            elif line.startswith("[") or "Error" in line or "TIMEOUT" in line:
                print(line[:400], flush=True)
        if not got:
            print(f"[{variant}] produced no result; tail:\n" + text[-3000:], flush=True)
        rows.extend(got)
        for r in got:
            print(f"[{variant}] {r['data']} b={r['batch']} " + (f"{r['tokens_per_s']:,.0f} tok/s peak {r['peak_gib']:.1f} GiB "
                  f"losses {['%.3f' % x for x in r['losses']]}" if r.get("ok") else r.get("error", "?")), flush=True)
    table = fmt_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_sft_gpu" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=1))
    (out / f"{stem}_table.md").write_text(table + "\n")
    print(f"\n{'DPO' if args.dpo else 'SFT'} seq {args.seq}, {args.layers} layers, LoRA r=8 dropout {args.lora_dropout}, "
          f"warmup {args.warmup} + {args.steps} timed steps, {env['device']}")
    print(table)


if __name__ == "__main__":
    main()
