import json

from training.cli import main
from training.distill import garbled_reason


def chat(user, answer, type_="style"):
    return {"type": type_, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


LONG = ("State one arguable claim at the end of the introduction, preview your main points, and make sure "
        "every body paragraph supports it with evidence and explanation of the main points.")


def test_distill_drops_each_reason(tmp_path):
    records = [
        chat("How do I write a thesis?", LONG),
        chat("How do I write a thesis?", LONG),  # exact
        chat("How do I write a thesis?", LONG.replace("main points.", "main points!")),  # near
        chat("Empty answer?", "   "),
        chat("Broken text", "CafÃ© rÃ©sumÃ© with \ufffd damage"),
        chat("Symbols", "#$%^&*()_+=-{}[]|\\:;<>?/~`"),
        chat("What is a topic sentence?", "The sentence that states a paragraph's main idea."),
        chat("论点怎么写？", "先写一个明确的中心句，再用论据支持它。"),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n{oops\n")
    out, report_path = tmp_path / "pairs.jsonl", tmp_path / "report.json"
    assert main(["distill", "--input", str(source), "--output", str(out), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["dropped_by_reason"] == {"invalid": 1, "empty": 1, "garbled": 2, "duplicate_exact": 1,
                                           "duplicate_near": 1}
    assert report["kept"] == 3 and report["input_records"] == 9
    assert report["length_chars"]["response"]["count"] == 3
    pairs = [json.loads(l) for l in out.read_text().splitlines()]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "How do I write a thesis?"}]
    assert pairs[0]["response"].startswith("State one")
    # Distilled pairs are themselves valid training input.
    assert main(["prepare", "--validate", str(out)]) == 0


def test_chinese_is_not_garbled():
    assert garbled_reason("先写一个明确的中心句。") is None
