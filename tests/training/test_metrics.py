from training.metrics import evaluate_rows, text_scores, to_markdown


def test_chinese_scores_are_not_zero():
    scores = text_scores(["每个段落都要有一个明确的中心句"], ["每个段落都要有一个明确的中心句，再用论据来支持它"])
    assert scores["bleu"] > 20 and scores["rouge_l"] > 50 and scores["chrf"] > 30


def test_identical_english_scores_full():
    scores = text_scores(["Use a clear thesis."], ["Use a clear thesis."])
    assert scores["rouge_l"] == 100.0 and scores["chrf"] == 100.0


def test_grouped_report_with_tool_exact_match():
    call = [{"name": "define_word", "arguments": {"word": "cogent"}}]
    rows = [
        {"type": "tool", "prediction": '<tool_call>{"name": "define_word", "arguments": {"word": "cogent"}}</tool_call>',
         "reference": "x", "reference_tool_calls": call},
        {"type": "tool", "prediction": '{"name": "define_word", "arguments": {"word": "other"}}',
         "reference": "x", "reference_tool_calls": call},
        {"type": "style", "prediction": "Peer note: good.", "reference": "Peer note: good."},
    ]
    report = evaluate_rows(rows)
    assert report["by_type"]["tool"]["tool_call_exact_match"] == 50.0
    assert report["by_type"]["tool"]["tool_name_match"] == 100.0
    assert "tool_call_exact_match" not in report["by_type"]["style"]
    assert report["overall"]["count"] == 3
    assert "| tool |" in to_markdown(report)
