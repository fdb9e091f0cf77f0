"""Structure-aware chunking: paragraphs are packed under their heading up to a size bound,
with a small overlap, and each chunk remembers its heading path and source line range."""

from __future__ import annotations

import re
from dataclasses import dataclass

from graphrag.documents import Block

DEFAULT_MAX_CHARS = 1200
DEFAULT_OVERLAP_CHARS = 200


@dataclass(frozen=True)
class ChunkDraft:
    heading_path: tuple[str, ...]
    text: str
    start_line: int
    end_line: int


def chunk_blocks(
    blocks: list[Block], max_chars: int = DEFAULT_MAX_CHARS, overlap_chars: int = DEFAULT_OVERLAP_CHARS
) -> list[ChunkDraft]:
    """A new heading always starts a new chunk, so a chunk never mixes two sections."""
    chunks: list[ChunkDraft] = []
    headings: list[tuple[int, str]] = []  # (level, title) of the open sections
    pending: list[Block] = []

    def emit(carry_overlap: bool) -> None:
        if not pending:
            return
        path = tuple(title for _, title in headings)
        text = "\n\n".join(b.text for b in pending)
        chunks.append(ChunkDraft(path, text, pending[0].start_line, pending[-1].end_line))
        # The overlap repeats the last paragraph when it is short, so a sentence that
        # depends on the one before it is still retrievable with its context.
        tail = pending[-1]
        pending.clear()
        if carry_overlap and len(tail.text) <= overlap_chars:
            pending.append(tail)

    for block in blocks:
        if block.level > 0:
            emit(carry_overlap=False)
            headings[:] = [(lvl, title) for lvl, title in headings if lvl < block.level]
            headings.append((block.level, block.text))
            continue
        for piece in split_oversized(block, max_chars):
            if pending and sum(len(b.text) + 2 for b in pending) + len(piece.text) > max_chars:
                emit(carry_overlap=True)
                if pending and len(pending[0].text) + 2 + len(piece.text) > max_chars:
                    pending.clear()  # the overlap would break the size bound: drop it
            pending.append(piece)
    emit(carry_overlap=False)
    return chunks


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def split_oversized(block: Block, max_chars: int) -> list[Block]:
    """Splits a paragraph longer than max_chars at line, then sentence boundaries, keeping
    each piece's own line range."""
    if len(block.text) <= max_chars:
        return [block]
    pieces: list[Block] = []
    current: list[str] = []
    current_start = current_end = block.start_line

    def flush() -> None:
        if current:
            pieces.append(Block(" ".join(current), current_start, current_end))
            current.clear()

    for offset, line in enumerate(block.text.split("\n")):
        line_number = block.start_line + offset
        for sentence in [s for s in _SENTENCE_END.split(line) if s] or [line]:
            if current and sum(len(s) + 1 for s in current) + len(sentence) > max_chars:
                flush()
            while len(sentence) > max_chars:  # one enormous sentence: hard cut
                flush()
                pieces.append(Block(sentence[:max_chars], line_number, line_number))
                sentence = sentence[max_chars:]
            if not current:
                current_start = line_number
            current.append(sentence)
            current_end = line_number
    flush()
    return pieces
