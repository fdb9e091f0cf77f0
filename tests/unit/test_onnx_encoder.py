"""common.onnx_encoder: batching by length, padding, pooling, concurrent workers (a fake session
stands in for onnxruntime, so these run in milliseconds)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from common.onnx_encoder import OnnxEncoder, length_batches, padded, pool

VOCAB = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("a b c d e f g h".split())}}


def tokenizer() -> Tokenizer:
    tok = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok


class FakeSession:
    """last_hidden_state[b, t] = [id, id * 2, 1]: mean pooling gives each text's mean id; padding
    rows (id 0) would drag the mean down if the mask were ignored. Records each batch's shape and
    the threads that ran it."""

    def __init__(self, inputs=("input_ids", "attention_mask", "token_type_ids"), delay: float = 0.0):
        self._inputs = [SimpleNamespace(name=n) for n in inputs]
        self.shapes: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fed: list[set[str]] = []

    def get_inputs(self):
        return self._inputs

    def run(self, _outputs, feed):
        ids = feed["input_ids"]
        self.shapes.append(ids.shape)
        self.fed.append(set(feed))
        self.threads.add(threading.current_thread().name)
        if self.delay:
            threading.Event().wait(self.delay)
        hidden = np.stack([ids, ids * 2, np.ones_like(ids)], axis=-1).astype(np.float32)
        return [hidden]


def expected_mean(text: str, max_tokens: int = 256) -> np.ndarray:
    ids = [VOCAB.get(w, 1) for w in text.split()][:max_tokens]
    v = np.array([np.mean(ids), 2 * np.mean(ids), 1.0])
    return v / np.linalg.norm(v)


def test_length_batches_cover_every_row_once_shortest_first():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = list(length_batches(lengths, 3))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [[lengths[i] for i in b] for b in batches] == [[1, 2, 3], [3, 5, 7], [9]]
    budgeted = list(length_batches([10] * 5 + [40] * 3, 64, token_budget=80))
    assert [len(b) for b in budgeted] == [5, 2, 1]  # five 10s (50 <= 80); a 40 widens the batch: 2 x 40 = 80
    assert all(max(10 if i < 5 else 40 for i in b) * len(b) <= 80 for b in budgeted)


def test_padded_pads_to_the_longest_row_of_the_batch():
    tok = tokenizer()
    encodings = tok.encode_batch(["a b c", "d", "e f"])
    ids, mask, types = padded(encodings, [1, 2])
    assert ids.tolist() == [[VOCAB["d"], 0], [VOCAB["e"], VOCAB["f"]]]
    assert mask.tolist() == [[1, 0], [1, 1]]
    assert types.tolist() == [[0, 0], [0, 0]]


def test_pool_mean_ignores_padding_and_cls_takes_the_first_row():
    hidden = np.array([[[3.0, 4.0], [100.0, 100.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    mask = np.array([[1, 0], [1, 1]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[0.6, 0.8], [2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[0.6, 0.8], [1.0, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError):
        pool(hidden, mask, "max")


TEXTS = ["a b c d e f g h", "b", "c c", "h h h", "a", "g f e d c", "b b b b", "zzz a"]


def test_encoder_keeps_input_order_and_sorts_batches_by_length():
    session = FakeSession()
    encoder = OnnxEncoder(session, tokenizer(), dimension=3, pooling="mean", batch_size=3)
    out = encoder.encode(TEXTS)
    np.testing.assert_allclose(out, np.stack([expected_mean(t) for t in TEXTS]), rtol=1e-6)
    # lengths 8,1,2,3,1,5,4,2 sorted -> widths of batches of 3: [1,1,2] [2,3,4] [5,8]
    assert session.shapes == [(3, 2), (3, 4), (2, 8)]
    assert encoder.encode([]).shape == (0, 3)


def test_unsorted_batches_pad_more_and_give_the_same_vectors():
    session = FakeSession()
    encoder = OnnxEncoder(session, tokenizer(), dimension=3, pooling="mean", batch_size=3, sort_by_length=False)
    out = encoder.encode(TEXTS)
    np.testing.assert_allclose(out, np.stack([expected_mean(t) for t in TEXTS]), rtol=1e-6)
    assert session.shapes == [(3, 8), (3, 5), (2, 4)]


def test_truncation_and_inputs_the_model_lacks():
    session = FakeSession(inputs=("input_ids", "attention_mask"))
    encoder = OnnxEncoder(session, tokenizer(), dimension=3, pooling="mean", max_tokens=2)
    out = encoder.encode(["h h a a a"])
    np.testing.assert_allclose(out[0], expected_mean("h h"), rtol=1e-6)
    assert session.fed == [{"input_ids", "attention_mask"}]


def test_workers_run_batches_concurrently_with_the_same_result():
    serial = OnnxEncoder(FakeSession(), tokenizer(), dimension=3, pooling="cls", batch_size=2).encode(TEXTS)
    session = FakeSession(delay=0.02)
    encoder = OnnxEncoder(session, tokenizer(), dimension=3, pooling="cls", batch_size=2, workers=2)
    np.testing.assert_array_equal(encoder.encode(TEXTS), serial)
    assert len(session.threads) == 2 and all(t.startswith("onnx-encoder") for t in session.threads)
    # the longest batches are handed out first so both workers finish together
    widths = sorted((width for _, width in session.shapes), reverse=True)
    assert sorted(w for _, w in session.shapes[:2]) == sorted(widths[:2])
