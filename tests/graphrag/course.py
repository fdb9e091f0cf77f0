"""The fixture course: English Markdown, HTML and text, a Chinese chapter, a broken PDF and a binary."""

from __future__ import annotations

from pathlib import Path

THESIS_MD = """\
# Thesis Statements

A thesis statement is the main claim of an essay.
It appears at the end of the introduction.

## Arguable claims

A strong claim is arguable: a reader could disagree.
Support the claim with evidence from sources.

## Revising

Revise the thesis when new evidence contradicts it.
"""

EVIDENCE_MD = """\
# Evidence

Evidence can be a quotation, a statistic or an example.
Explain how the evidence supports the paragraph's point.

## Analysis

Analysis connects quotation and statistic to the argument; sources never speak for themselves.
"""

CHINESE_MD = """\
# 议论文写作

议论文通过论点、论据和论证来说服读者。

## 中心论点

中心论点是全文要证明的观点，一般在开头段提出。论点要明确、具体。

## 论据

事实论据包括实例和数据，引用数据时要注明出处。
"""

CITATIONS_HTML = """\
<html><head><title>Citations</title><style>p {color: red}</style></head>
<body>
<h1>Citing sources</h1>
<p>APA style uses author-date citations
such as (Smith, 2020).</p>
<h2>Plagiarism</h2>
<p>Plagiarism is presenting another writer's words as your own.</p>
</body></html>
"""

NOTES_TXT = """\
Proofreading checklist.

Read the draft aloud to catch missing words.
Check every citation against the reference list.
"""


def write_course(folder: Path) -> Path:
    (folder / "english").mkdir(parents=True, exist_ok=True)
    (folder / "chinese").mkdir(exist_ok=True)
    (folder / "english" / "thesis.md").write_text(THESIS_MD, encoding="utf-8")
    (folder / "english" / "evidence.md").write_text(EVIDENCE_MD, encoding="utf-8")
    (folder / "english" / "citations.html").write_text(CITATIONS_HTML, encoding="utf-8")
    (folder / "english" / "notes.txt").write_text(NOTES_TXT, encoding="utf-8")
    (folder / "chinese" / "argument.md").write_text(CHINESE_MD, encoding="utf-8")
    (folder / "english" / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01")
    (folder / "english" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return folder


def minimal_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with a real text layer (Helvetica, one text line per entry), built by hand
    so the tests need no PDF writer library."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # pages object filled in below
    font_number = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    page_numbers = []
    for lines in pages:
        body = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
        stream = body.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_number = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content_number, font_number))
        page_numbers.append(len(objects))
    kids = " ".join(f"{n} 0 R" for n in page_numbers).encode()
    objects[1] = b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_numbers)
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
