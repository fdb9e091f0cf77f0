"""CPU tests for training/speedups.py: no GPU needed, a tiny Llama, a few seconds."""

from __future__ import annotations

import copy
import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from training import speedups  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(attn="sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=101,
        max_position_embeddings=256,
        use_cache=False,
    )
    return LlamaForCausalLM._from_config(cfg, dtype=torch.float32, attn_implementation=attn)


def lora(model, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, lora_dropout=dropout, target_modules=TARGETS))
    # LoRA B starts at zero; give it values so the adapter path matters in the comparisons
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return m


def test_cpu_returns_model_unchanged(caplog):
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    forward_before = model.forward
    ids = torch.randint(0, 101, (1, 12))
    out_before = model(input_ids=ids).logits
    with caplog.at_level(logging.INFO, logger="training.speedups"):
        got = speedups.apply_speedups(model, device="cpu", enable=True)
    assert got is model
    assert "not CUDA" in caplog.text
    assert model.forward == forward_before
    assert not hasattr(model, "tutorstack_speedups")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(input_ids=ids).logits, out_before)
    assert type(model.model.layers[0].mlp).__name__ == "LlamaMLP"


def test_disabled_returns_model_unchanged(caplog):
    model = lora(tiny_llama())
    with caplog.at_level(logging.INFO, logger="training.speedups"):
        got = speedups.apply_speedups(model, device="cuda", enable=False)
    assert got is model
    assert "disabled" in caplog.text
    assert not any(hasattr(m, "_tutorstack_orig_forward") for m in model.modules())


def test_packing_attn_implementation_on_cpu():
    assert speedups.packing_attn_implementation("cpu") == "sdpa"


def test_flatten_batch_no_padding_and_positions():
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [13, 14, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = speedups.flatten_batch(ids, attention_mask=mask)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]
    assert 0 not in out["input_ids"].tolist()[0]  # no pad token survives
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9, 10, 11, 12, -100, 14]]
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 8, 10]
    assert out["cu_seq_lens_q"].dtype == torch.int32
    assert out["max_length_q"] == out["max_length_k"] == 5


def test_padding_free_collator():
    collate = speedups.padding_free_collator()
    feats = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}, {"input_ids": [6, 7, 8, 9]}]
    out = collate(feats)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert out["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, 7, 8, 9]]
    assert out["cu_seq_lens_q"].tolist() == [0, 3, 5, 9]
    assert int(out["max_length_q"]) == 4
    assert "attention_mask" not in out


def test_cu_seqlens_from_position_ids():
    cu, mx = speedups._cu_seqlens_from_position_ids(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]))
    assert cu.tolist() == [0, 3, 5, 9] and mx == 4


def test_packed_row_matches_padded_batch_loss():
    """The flattened row gives the same loss as the [B, L] batch (block-diagonal attention)."""
    model = tiny_llama()
    model.eval()
    ids = torch.randint(1, 101, (3, 9))
    batch_loss = model(input_ids=ids, labels=ids).loss
    packed = speedups.flatten_batch(ids)
    packed_loss = model(**{k: v for k, v in packed.items() if not k.startswith(("cu_", "max_"))}).loss
    torch.testing.assert_close(packed_loss, batch_loss, rtol=1e-5, atol=1e-5)


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_fused_lora_matches_peft():
    ref = lora(tiny_llama())
    fused = copy.deepcopy(ref)
    n = speedups.fuse_lora_linears(fused)
    assert n == 2 * len(TARGETS)
    ref.train(), fused.train()
    ids = torch.randint(0, 101, (2, 10))
    q_proj = fused.base_model.model.model.layers[0].self_attn.q_proj
    y = q_proj(torch.randn(2, 3, 64, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_FusedLoraLinearBackward"  # the fused path ran, not the fallback
    l_ref, g_ref = _loss_and_grads(ref, ids)
    l_fused, g_fused = _loss_and_grads(fused, ids)
    torch.testing.assert_close(l_fused, l_ref, rtol=1e-5, atol=1e-6)
    assert g_ref.keys() == g_fused.keys() and len(g_ref) == 4 * len(TARGETS)
    for k in g_ref:
        torch.testing.assert_close(g_fused[k], g_ref[k], rtol=1e-4, atol=1e-6)


def test_fused_lora_dropout_and_fallbacks():
    ref = lora(tiny_llama(), dropout=0.5)
    fused = copy.deepcopy(ref)
    speedups.fuse_lora_linears(fused)
    ids = torch.randint(0, 101, (2, 10))
    # eval: dropout off, identical to peft
    ref.eval(), fused.eval()
    torch.testing.assert_close(fused(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    # train: dropout on, differs from the no-dropout output, gradients finite and present
    fused.train()
    loss, grads = _loss_and_grads(fused, ids)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for k, g in grads.items() if "lora_A" in k)
    # disabled adapters fall back to peft's forward (base model only)
    with fused.disable_adapter():
        base_logits = fused(input_ids=ids).logits
    with ref.disable_adapter():
        ref.eval()
        torch.testing.assert_close(base_logits.detach(), ref(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def _varlen_model():
    assert speedups.register_varlen_attention()
    model = tiny_llama()
    model.set_attn_implementation(speedups.VARLEN_ATTN_NAME)
    assert model.config._attn_implementation == speedups.VARLEN_ATTN_NAME
    model.eval()
    return model


def test_varlen_attention_uniform_packed_row_matches_batch():
    model = _varlen_model()
    ref = tiny_llama()  # same seed, same weights, stock sdpa
    ref.eval()
    ids = torch.randint(1, 101, (3, 8))
    packed = speedups.flatten_batch(ids)
    got = model(**packed).loss
    torch.testing.assert_close(got, ref(input_ids=ids, labels=ids).loss, rtol=1e-5, atol=1e-5)
    # the same row without cu_seq_lens: lengths are read off the restarting position_ids
    no_cu = {k: v for k, v in packed.items() if not k.startswith(("cu_", "max_"))}
    torch.testing.assert_close(model(**no_cu).loss, got, rtol=1e-5, atol=1e-5)


def test_varlen_attention_mixed_lengths_matches_separate_sequences():
    model = _varlen_model()
    ref = tiny_llama()
    ref.eval()
    seqs = [torch.randint(1, 101, (n,)) for n in (5, 9, 3)]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    packed = speedups.flatten_batch(ids, attention_mask=mask)
    logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
    start = 0
    for s in seqs:  # each sequence alone through the stock model: same logits, no leakage across sequences
        alone = ref(input_ids=s[None]).logits[0]
        torch.testing.assert_close(logits[start : start + len(s)], alone, rtol=1e-4, atol=1e-5)
        start += len(s)
    # a padded batch with a 2-D attention mask also goes through (SDPA fallback)
    padded = model(input_ids=ids, attention_mask=mask).logits
    for i, s in enumerate(seqs):
        torch.testing.assert_close(padded[i, : len(s)], ref(input_ids=s[None]).logits[0], rtol=1e-4, atol=1e-5)
