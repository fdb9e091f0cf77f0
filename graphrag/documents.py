"""Reading a source file into structural blocks (headings and paragraphs) with line numbers.

Markdown, plain text, HTML and PDF (text layer). A file that cannot be read raises
UnreadableFile with a reason; the build reports it and goes on with the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
MAX_FILE_BYTES = 20 * 1024 * 1024


class UnreadableFile(Exception):
    """The file is skipped; str(exc) is the reason shown in the build report."""


@dataclass(frozen=True)
class Block:
    """A heading (level >= 1) or a paragraph (level 0) spanning source lines [start_line, end_line]."""

    text: str
    start_line: int
    end_line: int
    level: int = 0


def read_blocks(path: Path) -> list[Block]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UnreadableFile(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if suffix in PDF_SUFFIXES:
        return pdf_blocks(path)
    text = decode_text(path.read_bytes())
    if suffix in HTML_SUFFIXES:
        return html_blocks(text)
    return markdown_blocks(text) if suffix in MARKDOWN_SUFFIXES else text_blocks(text)


def decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary content (NUL bytes)")
    for encoding in ("utf-8-sig", "gb18030"):  # gb18030 covers legacy Chinese files
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnreadableFile("not valid UTF-8 or GB18030 text")


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_blocks(text: str, headings: bool = True) -> list[Block]:
    """ATX headings become heading blocks; blank lines separate paragraphs; fenced code stays whole."""
    blocks: list[Block] = []
    paragraph: list[tuple[int, str]] = []
    in_fence = False

    def flush() -> None:
        if paragraph:
            blocks.append(Block("\n".join(line for _, line in paragraph), paragraph[0][0], paragraph[-1][0]))
            paragraph.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        if headings and _FENCE.match(line):
            in_fence = not in_fence
            paragraph.append((number, line))
            continue
        heading = _HEADING.match(line) if headings and not in_fence else None
        if heading:
            flush()
            blocks.append(Block(heading.group(2), number, number, level=len(heading.group(1))))
        elif not line.strip() and not in_fence:
            flush()
        else:
            paragraph.append((number, line))
    flush()
    return blocks


def text_blocks(text: str) -> list[Block]:
    return markdown_blocks(text, headings=False)


_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HTML_BLOCKS = {"p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "div", "section", "article", "br", "tr"}
_HTML_SKIPPED = {"script", "style", "noscript", "template", "head"}


class _HtmlBlockParser(HTMLParser):
    """Collects text per block element, keeping the source line where each block starts and ends."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._parts: list[str] = []
        self._start: int | None = None
        self._level = 0
        self._skip_depth = 0

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._parts)).strip()
        if text and self._start is not None:
            self.blocks.append(Block(text, self._start, max(self._start, self.getpos()[0]), self._level))
        self._parts, self._start, self._level = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag in _HTML_SKIPPED:
            self._skip_depth += 1
        elif tag in _HTML_HEADINGS or tag in _HTML_BLOCKS:
            self._flush()
            self._level = _HTML_HEADINGS.get(tag, 0)

    def handle_endtag(self, tag):
        if tag in _HTML_SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _HTML_HEADINGS or tag in _HTML_BLOCKS:
            self._flush()

    def handle_data(self, data):
        if self._skip_depth or not data.strip():
            return
        if self._start is None:
            self._start = self.getpos()[0]
        self._parts.append(data)


def html_blocks(text: str) -> list[Block]:
    parser = _HtmlBlockParser()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.blocks


def pdf_blocks(path: Path) -> list[Block]:
    """Text layer only. Lines are counted through the extracted text of all pages; each page
    opens with a level-1 pseudo-heading "page N" so citations also name the page."""
    try:
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many types for damaged files
        raise UnreadableFile(f"PDF could not be parsed: {type(exc).__name__}: {exc}"[:200]) from exc
    if not any(page.strip() for page in pages):
        raise UnreadableFile("PDF has no text layer")
    blocks: list[Block] = []
    line_offset = 0
    for page_number, page_text in enumerate(pages, start=1):
        blocks.append(Block(f"page {page_number}", line_offset + 1, line_offset + 1, level=1))
        for block in text_blocks(page_text):
            blocks.append(Block(block.text, block.start_line + line_offset, block.end_line + line_offset))
        line_offset += len(page_text.splitlines())
    return blocks
