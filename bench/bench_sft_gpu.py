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
989 TFLOP/s = H100 SXM bf16 dense peak.

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


def child(args) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    variant = args.child
    sp = load_speedups()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        hidden_act="silu",
        tie_word_embeddings=False,
        use_cache=False,
    )
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
    if variant in ("liger", "liger_lora"):
        model = sp.apply_speedups(
            model, device="cuda", enable=True, liger=True, fused_lora=(variant == "liger_lora"), padding_free_attention=False
        )
    elif variant.startswith("pipeline"):
        model = sp.apply_speedups(model, device="cuda", enable=True, compile_layers=(variant == "pipeline_compile"))
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

    # numerical check: same weights (same seed), same tokens, no dropout, no grad
    g = torch.Generator(device=dev).manual_seed(1234)
    check = make_batch(2, g)[0]
    model.eval()
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
        check_loss = float(model(**check).loss)
    model.train()
    del check

    def step(batch):
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    scenarios = [("full", b) for b in args.batches]
    if variant in args.mixed_variants:
        scenarios += [("mixed", b) for b in args.mixed_batches]
    for data, bsz in scenarios:
        g = torch.Generator(device=dev).manual_seed(bsz)
        cpu_gen.manual_seed(100 + bsz)
        batches = [make_batch(bsz, g, data) for _ in range(2)]
        sync()
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        res = {"variant": variant, "data": data, "batch": bsz, "seq": args.seq, "applied": applied,
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


# ------------------------------------------------------------------------ orchestrator


def fmt_table(rows: list[dict]) -> str:
    base = {(r["data"], r["batch"]): r for r in rows if r["variant"] == "baseline" and r.get("ok")}
    out = [
        "| data | batch | variant | tokens/s | step s | peak GiB | MFU 6N | MFU LoRA | tok/s vs baseline | peak vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["data"] != "full", r["batch"])):
        head = f"| {r['data']} | {r['batch']} | {r['variant']} |"
        if not r.get("ok"):
            out.append(f"{head} {r.get('error', 'failed')[:60]} | | {r.get('peak_gib', 0):.1f} | | | | |")
            continue
        b = base.get((r["data"], r["batch"]))
        tps = r["tokens_per_s"]
        ratio = f"{tps / b['tokens_per_s']:.2f}x" if b else "-"
        mem = f"{r['peak_gib'] / b['peak_gib']:.0%}" if b and b["peak_gib"] > 0 else "-"
        out.append(
            f"{head} {tps:,.0f} | {r['step_s']:.3f} | {r['peak_gib']:.1f} | {r['mfu_6n']:.1%} | "
            f"{r['mfu_lora']:.1%} | {ratio} | {mem} |"
        )
    return "\n".join(out)


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
    args = ap.parse_args()
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.mixed_batches = [int(b) for b in str(args.mixed_batches).split(",") if b]
    args.mixed_variants = [v for v in str(args.mixed_variants).split(",") if v]
    if args.child:
        child(args)
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
               "--mixed-batches", ",".join(map(str, args.mixed_batches))] + (["--smoke-cpu"] if args.smoke_cpu else []) + (
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
    (out / "bench_sft_gpu.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=1))
    (out / "bench_sft_gpu_table.md").write_text(table + "\n")
    print(f"\nseq {args.seq}, {args.layers} layers, LoRA r=8 dropout {args.lora_dropout}, "
          f"warmup {args.warmup} + {args.steps} timed steps, {env['device']}")
    print(table)


if __name__ == "__main__":
    main()
