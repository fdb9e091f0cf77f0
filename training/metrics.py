"""Evaluation metrics over predictions: BLEU, chrF, ROUGE-L, tool-call exact match; grouped by type.

Chinese is scored on its own terms: BLEU with sacrebleu's `zh` tokenizer and ROUGE-L over
jieba words (rouge-score's default tokenizer drops every CJK character and scores 0).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from training.dataspec import parse_tool_calls

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[a-z0-9]+")


def is_chinese(text: str, min_ratio: float = 0.2) -> bool:
    visible = [ch for ch in text if not ch.isspace()]
    return bool(visible) and len(CJK.findall(text)) / len(visible) >= min_ratio


class MixedTokenizer:
    """rouge-score tokenizer: jieba words for CJK text, lower-cased alphanumeric words otherwise."""

    def tokenize(self, text: str) -> list[str]:
        if CJK.search(text):
            import jieba  # lazy: loading its dictionary takes a second

            jieba.setLogLevel(60)
            return [tok.strip().lower() for tok in jieba.lcut(text) if tok.strip() and not _is_punct(tok.strip())]
        return LATIN_WORD.findall(text.lower())


def _is_punct(token: str) -> bool:
    return all(not ch.isalnum() for ch in token)


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu), mean ROUGE-L F1 (rouge-score), all on a 0-100 scale."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predictions:
        return {"bleu": 0.0, "chrf": 0.0, "rouge_l": 0.0}
    chinese = any(is_chinese(r) for r in references)
    # The zh tokenizer splits CJK characters and applies 13a to everything else, so mixed groups are safe.
    bleu = sacrebleu.corpus_bleu(predictions, [references], tokenize="zh" if chinese else "13a")
    chrf = sacrebleu.corpus_chrf(predictions, [references])
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MixedTokenizer())
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2),
            "rouge_l": round(100 * sum(rouge) / len(rouge), 2)}


def canonical_calls(calls: list[dict]) -> list[str]:
    return [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in calls]


def tool_scores(rows: list[dict]) -> dict[str, float] | None:
    """Exact match of the whole tool-call list (names and arguments) and of the names alone."""
    scored = [r for r in rows if r.get("reference_tool_calls")]
    if not scored:
        return None
    exact = names = 0
    for row in scored:
        predicted = parse_tool_calls(row["prediction"])
        reference = row["reference_tool_calls"]
        exact += canonical_calls(predicted) == canonical_calls(reference)
        names += [c["name"] for c in predicted] == [c["name"] for c in reference]
    return {"tool_call_exact_match": round(100 * exact / len(scored), 2),
            "tool_name_match": round(100 * names / len(scored), 2), "tool_records": len(scored)}


def evaluate_rows(rows: Iterable[dict]) -> dict[str, Any]:
    """Rows are predict's output: {id, type, prediction, reference, reference_tool_calls?}."""
    rows = list(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row.get("type", "unknown")].append(row)
    result: dict[str, Any] = {"count": len(rows), "by_type": {}}
    for name, members in sorted(groups.items()) + [("overall", rows)]:
        scores: dict[str, Any] = {"count": len(members)}
        scores.update(text_scores([m["prediction"] for m in members], [m["reference"] for m in members]))
        tools = tool_scores(members)
        if tools:
            scores.update(tools)
        if name == "overall":
            result["overall"] = scores
        else:
            result["by_type"][name] = scores
    return result


def to_markdown(report: dict[str, Any], title: str = "Evaluation") -> str:
    columns = ["count", "bleu", "chrf", "rouge_l", "tool_call_exact_match", "tool_name_match"]
    lines = [f"# {title}", "", "| group | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in list(report["by_type"].items()) + [("**overall**", report["overall"])]:
        cells = [str(scores.get(c, "–")) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "BLEU and chrF: sacrebleu (zh tokenizer where references are Chinese); ROUGE-L F1 over words "
              "(jieba for Chinese); tool-call exact match compares names and arguments. Scale 0-100.", ""]
    return "\n".join(lines)


def write_report(rows: list[dict], json_path: str | Path, markdown_path: str | Path | None = None,
                 title: str = "Evaluation") -> dict[str, Any]:
    report = evaluate_rows(rows)
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown_path = Path(markdown_path) if markdown_path else json_path.with_suffix(".md")
    markdown_path.write_text(to_markdown(report, title), encoding="utf-8")
    return report
