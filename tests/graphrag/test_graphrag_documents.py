from pathlib import Path

import pytest

from graphrag.chunking import chunk_blocks
from graphrag.documents import UnreadableFile, decode_text, html_blocks, markdown_blocks, read_blocks
from graphrag.text import tokenize


def test_markdown_blocks_keep_line_numbers_and_heading_levels():
    blocks = markdown_blocks("# Title\n\nfirst line\nsecond line\n\n## Sub\ntext\n")
    assert [(b.text, b.start_line, b.end_line, b.level) for b in blocks] == [
        ("Title", 1, 1, 1), ("first line\nsecond line", 3, 4, 0), ("Sub", 6, 6, 2), ("text", 7, 7, 0)]


def test_fenced_code_is_not_read_as_headings():
    blocks = markdown_blocks("```\n# not a heading\n\nstill code\n```\n")
    assert [b.level for b in blocks] == [0]
    assert blocks[0].start_line == 1 and blocks[0].end_line == 5


def test_chunks_carry_heading_path_and_never_mix_sections():
    text = "# A\n\npara one\n\n## B\n\npara two\n\n# C\n\npara three\n"
    chunks = chunk_blocks(markdown_blocks(text), max_chars=1000)
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("A",), 3, 3), (("A", "B"), 7, 7), (("C",), 11, 11)]


def test_size_bound_splits_with_overlap_and_line_ranges():
    paragraphs = [f"Sentence number {i} is here." for i in range(12)]
    text = "# T\n\n" + "\n\n".join(paragraphs) + "\n"
    chunks = chunk_blocks(markdown_blocks(text), max_chars=120, overlap_chars=40)
    assert len(chunks) > 2
    assert all(len(c.text) <= 120 for c in chunks)
    lines = text.splitlines()
    for chunk in chunks:  # every chunk's text is exactly its cited lines (minus blank lines)
        cited = [line for line in lines[chunk.start_line - 1:chunk.end_line] if line.strip()]
        assert chunk.text.split("\n\n") == cited
    assert chunks[1].start_line == chunks[0].end_line  # the short last paragraph is repeated


def test_an_oversized_paragraph_is_split_at_sentences():
    text = " ".join(f"Sentence {i} says something." for i in range(50))
    chunks = chunk_blocks(markdown_blocks(text), max_chars=200)
    assert len(chunks) > 5 and all(len(c.text) <= 200 for c in chunks)


def test_html_blocks_point_at_source_lines():
    html = "<html><body>\n<h1>Title</h1>\n<p>one\ntwo</p>\n<script>var x = 1;</script>\n</body></html>"
    blocks = html_blocks(html)
    assert [(b.text, b.start_line, b.level) for b in blocks] == [("Title", 2, 1), ("one two", 3, 0)]
    assert blocks[1].end_line == 4


def test_unreadable_files_say_why(tmp_path: Path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(UnreadableFile, match="PDF"):
        read_blocks(broken)
    binary = tmp_path / "data.md"
    binary.write_bytes(b"abc\x00def")
    with pytest.raises(UnreadableFile, match="binary"):
        read_blocks(binary)
    other = tmp_path / "image.png"
    other.write_bytes(b"\x89PNG")
    with pytest.raises(UnreadableFile, match="unsupported"):
        read_blocks(other)


def test_legacy_chinese_encoding_is_decoded():
    assert decode_text("论点".encode("gb18030")) == "论点"


def test_tokenize_stems_english_and_segments_chinese():
    assert tokenize("Essays and the essay") == tokenize("essay essay")
    tokens = tokenize("中心论点要明确")
    assert "论点" in tokens and "中心" in tokens


def test_pdf_text_layer_gives_page_headings_and_lines(tmp_path: Path):
    from tests.graphrag.course import minimal_pdf

    pdf = tmp_path / "handout.pdf"
    pdf.write_bytes(minimal_pdf([["Handout on outlines", "A reverse outline checks structure."],
                                 ["Second page about topic sentences."]]))
    blocks = read_blocks(pdf)
    assert blocks[0].text == "page 1" and blocks[0].level == 1
    page_two = [b for b in blocks if b.text == "page 2"][0]
    topic = [b for b in blocks if "topic sentences" in b.text][0]
    assert topic.start_line > page_two.start_line - 1 >= 1
    chunks = chunk_blocks(blocks)
    assert [c.heading_path for c in chunks] == [("page 1",), ("page 2",)]
    assert "reverse outline" in chunks[0].text
