"""The live index behind the service: loads the current version, notices a new one and swaps
it in. A request keeps the Retriever it started with, so a reload never drops or mixes
requests; loading happens off the event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from graphrag import index_store
from graphrag.dense import Embedder, load_embedder, single_thread_blas, single_thread_queries
from graphrag.retriever import RetrievalConfig, Retriever

log = logging.getLogger("graphrag.service")


@dataclass(frozen=True)
class LiveIndex:
    retriever: Retriever
    version: str


class IndexHolder:
    def __init__(self, index_path: Path, config: RetrievalConfig | None = None, reranker=None):
        self.index_path = Path(index_path)
        self.config = config or RetrievalConfig.from_file()
        self.reranker = reranker
        self.live: LiveIndex | None = None
        self.last_error: str | None = None
        self._embedders: dict[str, Embedder] = {}
        self._lock = asyncio.Lock()

    def pointer_version(self) -> str | None:
        try:
            return (self.index_path / "CURRENT").read_text().strip()
        except OSError:
            return None

    async def refresh(self) -> bool:
        """Loads the version CURRENT names if it is not the live one. True when it swapped."""
        async with self._lock:
            wanted = self.pointer_version()
            if wanted is None:
                self.last_error = f"no index at {self.index_path}"
                return False
            if self.live and self.live.version == wanted:
                return False
            try:
                live = await asyncio.to_thread(self._load)
            except Exception as exc:  # keep serving the old version
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("index load failed; keeping the previous version", extra={"error": self.last_error})
                return False
            self.live, self.last_error = live, None
            log.info("index loaded", extra={"version": live.version, "chunks": len(live.retriever.index.chunks)})
            return True

    def _load(self) -> LiveIndex:
        index = index_store.load_index(self.index_path)
        single_thread_blas()
        # The query must be embedded by the model that embedded the chunks: the manifest's, per leg.
        embedders = {name: self._embedder(leg.provider) for name, leg in index.legs().items()}
        return LiveIndex(Retriever(index, None, self.config, embedders=embedders, reranker=self.reranker),
                         index.version)

    def _embedder(self, provider: str) -> Embedder | None:
        """A model that cannot load (package missing) leaves the index usable without dense
        scores: hybrid then fuses keyword and graph, and responses say "dense": false."""
        if provider not in self._embedders:
            try:
                self._embedders[provider] = load_embedder(provider)
            except Exception as exc:
                log.warning("embedding model unavailable; serving without dense scores",
                            extra={"provider": provider, "error": f"{type(exc).__name__}: {exc}"})
                return None
            if provider in {"minilm", "sentence-transformers"} or provider.startswith("st:"):  # torch models
                single_thread_queries()
            set_threads = getattr(self._embedders[provider], "set_threads", None)
            if set_threads:  # one short query per call: one thread is fastest on a busy machine
                set_threads(1)
        return self._embedders[provider]

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one failure
                log.exception("index watcher error")
