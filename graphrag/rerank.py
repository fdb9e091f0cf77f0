"""Optional second stage: a cross-encoder rescoring the fused top candidates of hybrid mode.

RERANKER_PROVIDER values:
  ""/"none"              no reranker (requests asking for one get the first-stage order, and
                         their `legs` say so)
  "st-cross:/path/dir"   any sentence-transformers CrossEncoder folder on disk (weights from a
                         package or copied in; nothing is fetched from a hub)

No PyPI package found on 2026-11-29 ships cross-encoder weights (see docs/graphrag.md), so
the default is none; the interface is what a deployment plugs a model into.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np


class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """Higher is more relevant; one score per passage."""


def load_reranker(provider: str | None) -> Reranker | None:
    value = (provider or "").strip()
    if value.lower() in {"", "none", "off", "false"}:
        return None
    if value.startswith("st-cross:"):
        return CrossEncoderReranker(Path(value[len("st-cross:"):]).expanduser())
    raise ValueError(f"unknown RERANKER_PROVIDER {value!r}: use none or st-cross:/path/to/model")


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
