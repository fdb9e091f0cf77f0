"""Build a Llama-shaped model with random weights (about 1.07 B parameters, bf16) and two random
LoRA adapters for the GPU-path run (bench/results/gpu_path_h200.md). Runs on the device machine.

    python3 scripts/gpu_path/make_model.py --tokenizer DIR --out /root/ts

DIR holds a tokenizer (the carried SmolLM2 tokenizer: ChatML chat template, 49,152 tokens), so the
model speaks the same chat format as the embedded default. Writes <out>/models/<name> and
<out>/adapters/peer-v1, peer-v2 (PEFT, rank 16 on all seven linears, non-zero B so an adapter
really changes the output).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="Llama-1B-random")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="2 small layers: a local dry run of the script")
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(args.out)
    model_dir = out / "models" / args.name
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2) if args.tiny else \
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16)
    config = LlamaConfig(
        vocab_size=len(tok), **shape,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="bfloat16")
    started = time.time()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(args.device):
        model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    for extra in ("chat_template.jinja",):
        if (Path(args.tokenizer) / extra).is_file():
            shutil.copy(Path(args.tokenizer) / extra, model_dir / extra)
    print(f"model: {model_dir} ({params / 1e9:.3f} B parameters, {time.time() - started:.1f}s)", flush=True)

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for seed, name in ((1, "peer-v1"), (2, "peer-v2")):
        torch.manual_seed(seed)
        lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets, lora_dropout=0.0,
                          init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora)
        with torch.no_grad():  # small random B: a visible but not exploding change
            for pname, p in peft_model.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0.0, 0.01)
        adapter_dir = out / "adapters" / name
        peft_model.save_pretrained(adapter_dir)
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(model_dir)
        (adapter_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        model = peft_model.unload()  # back to the plain base for the next adapter
        size = sum(f.stat().st_size for f in adapter_dir.iterdir())
        print(f"adapter: {adapter_dir} (rank {args.rank}, {size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
