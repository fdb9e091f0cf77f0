"""The records an index is made of: chunks with their citation, and the source files they came from."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


@dataclass
class Chunk:
    id: str  # "<path>#<n>", stable across rebuilds while the file is unchanged
    path: str  # relative to the build root, with forward slashes
    heading_path: list[str]
    start_line: int
    end_line: int
    text: str
    tokens: list[str] = field(default_factory=list)

    @property
    def index_text(self) -> str:
        """Headings are indexed with the body: a section title often holds the words a learner asks with."""
        return "\n".join([*self.heading_path, self.text])

    @property
    def content_hash(self) -> str:
        return content_hash(self.index_text)

    def citation(self) -> dict:
        return {"path": self.path, "heading_path": self.heading_path,
                "start_line": self.start_line, "end_line": self.end_line}

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SourceFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    chunk_count: int


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
