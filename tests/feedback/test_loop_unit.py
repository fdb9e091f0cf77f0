"""Pure parts of the loop: the held-out split by prompt and the continued-pre-training corpus chunks."""

from training.loop import corpus_chunks, split_holdout


def test_holdout_split_keeps_a_prompt_on_one_side():
    records = [{"prompt": f"prompt {i % 20}", "chosen": "c", "rejected": "r"} for i in range(100)]
    train, held = split_holdout(records, 0.3)
    assert len(train) + len(held) == 100 and held and train
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert split_holdout(records, 0.3) == (train, held)  # deterministic


def test_corpus_chunks(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 50 for i in range(10)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Short note.")
    (tmp_path / "skip.py").write_text("print('not a document')")
    chunks = corpus_chunks(str(tmp_path), chunk_chars=600)
    assert chunks[-1] == "Short note." and all("print(" not in c for c in chunks)
    assert all(len(c) <= 700 for c in chunks[:-1]) and len(chunks) > 3
    assert "Paragraph 9" in "".join(chunks)
