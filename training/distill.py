"""Distill chat JSONL into clean prompt/response pairs.

Drops records that would teach the model nothing or something wrong: invalid, empty, garbled
(encoding damage, control characters, no words) and duplicates -- exact (same normalized text)
and near (MinHash over character shingles, banded LSH so it stays near-linear on big files).
Pure Python: no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from training.dataspec import read_records, record_problems, to_chat, normalize_record, to_template_messages, write_jsonl

MOJIBAKE = re.compile(r"(Ã.|Â.|â€.|ï¿½)")  # UTF-8 read as Latin-1, the usual damage
WORDLIKE = re.compile(r"[^\W\d_]", re.UNICODE)  # letters of any script, CJK included


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", text).strip()


def garbled_reason(text: str) -> str | None:
    """Why a text looks damaged, or None."""
    if not text:
        return None
    if "\ufffd" in text or len(MOJIBAKE.findall(text)) >= 2:
        return "encoding damage"
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t")
    if controls:
        return "control characters"
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) >= 8 and sum(1 for ch in visible if WORDLIKE.match(ch)) / len(visible) < 0.3:
        return "mostly symbols"
    return None


# ---------------------------------------------------------------- near-duplicates


def shingles(text: str, size: int = 5) -> set[str]:
    text = normalize_text(text)
    if len(text) <= size:
        return {text}
    return {text[i:i + size] for i in range(len(text) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash signatures in LSH bands; a candidate is confirmed by exact Jaccard on shingles."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 64, bands: int = 16):
        self.threshold = threshold
        self.rows = num_perm // bands
        self.bands = bands
        # One base hash per shingle, "permuted" by xor with a per-seed mask: cheap and good enough for LSH.
        self.masks = [int.from_bytes(hashlib.blake2b(str(s).encode(), digest_size=8).digest(), "big")
                      for s in range(num_perm)]
        self.buckets: dict[tuple, list[int]] = {}
        self.kept: list[set[str]] = []

    def _signature(self, grams: set[str]) -> list[int]:
        hashes = [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams]
        return [min(h ^ m for h in hashes) for m in self.masks]

    def find_or_add(self, text: str) -> bool:
        """True if `text` nearly duplicates something already added; otherwise add it."""
        grams = shingles(text)
        signature = self._signature(grams)
        keys = [(band, tuple(signature[band * self.rows:(band + 1) * self.rows])) for band in range(self.bands)]
        candidates = {i for key in keys for i in self.buckets.get(key, [])}
        if any(jaccard(grams, self.kept[i]) >= self.threshold for i in candidates):
            return True
        index = len(self.kept)
        self.kept.append(grams)
        for key in keys:
            self.buckets.setdefault(key, []).append(index)
        return False


# ---------------------------------------------------------------- the pass


@dataclass
class DistillResult:
    pairs: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few "file:line" locations
    total: int = 0

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)


def record_to_pair(record: dict) -> dict:
    """Prompt = the conversation before the last assistant turn; response = that turn's text."""
    messages = to_template_messages(record["messages"])
    pair = {"prompt": messages[:-1], "response": messages[-1]["content"]}
    for key in ("id", "type", "meta"):
        if key in record:
            pair[key] = record[key]
    return pair


def distill(paths: Iterable[str | Path], near_threshold: float = 0.85) -> DistillResult:
    result = DistillResult()
    seen_exact: set[str] = set()
    near = NearDuplicateIndex(threshold=near_threshold)
    for path in paths:
        for line, obj, error in read_records(path):
            where = f"{path}:{line}"
            result.total += 1
            if error:
                result.drop("invalid", where)
                continue
            try:
                record = to_chat(obj)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                result.drop("invalid", where)
                continue
            problems = record_problems(record)
            if any("empty" in p for p in problems):
                result.drop("empty", where)
                continue
            if problems:
                result.drop("invalid", where)
                continue
            pair = record_to_pair(normalize_record(record))
            prompt_text = "\n".join(m["content"] for m in pair["prompt"])
            if not pair["response"].strip():
                result.drop("empty", where)
                continue
            if garbled_reason(prompt_text) or garbled_reason(pair["response"]):
                result.drop("garbled", where)
                continue
            joined = normalize_text(prompt_text) + "\x00" + normalize_text(pair["response"])
            digest = hashlib.sha256(joined.encode()).hexdigest()
            if digest in seen_exact:
                result.drop("duplicate_exact", where)
                continue
            seen_exact.add(digest)
            # Near-duplicates are judged without the system prompt, which many records share verbatim.
            dialogue = "\n".join(m["content"] for m in pair["prompt"] if m["role"] != "system")
            if near.find_or_add(dialogue + "\n" + pair["response"]):
                result.drop("duplicate_near", where)
                continue
            result.pairs.append(pair)
    return result


def length_stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"count": len(values), "min": ordered[0], "max": ordered[-1],
            "mean": round(statistics.fmean(values), 1), "p50": pick(0.5), "p95": pick(0.95)}


def build_report(result: DistillResult) -> dict[str, Any]:
    prompts = [sum(len(m["content"]) for m in p["prompt"]) for p in result.pairs]
    responses = [len(p["response"]) for p in result.pairs]
    return {
        "input_records": result.total,
        "kept": len(result.pairs),
        "dropped": sum(result.dropped.values()),
        "dropped_by_reason": {reason: result.dropped.get(reason, 0)
                              for reason in ("invalid", "empty", "garbled", "duplicate_exact", "duplicate_near")},
        "dropped_examples": result.examples,
        "kept_by_type": dict(Counter(p.get("type", "unknown") for p in result.pairs)),
        "length_chars": {"prompt": length_stats(prompts), "response": length_stats(responses)},
    }


def run(inputs: list[str], output: str, report_path: str | None, near_threshold: float = 0.85) -> dict:
    result = distill(inputs, near_threshold=near_threshold)
    write_jsonl(output, result.pairs)
    report = build_report(result)
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
