"""Benchmark of the `safety` moderation classifier: precision/recall per category (and per language) on the
held-out `test` split of data/safety/labelled.jsonl, and the latency moderation adds to a request.

    python bench/bench_safety.py [--split test] [--requests 120] [--out bench/results/safety.md]

Quality: a text is predicted positive for a category when `check()` returns a finding of that category;
gold is the text's single label (`none` = no category). Also the false-alarm rate on `none` texts.

Latency (in-process, on this machine, after the models are loaded):
- non-streamed: one input check of the request plus one output check of the whole answer;
- streamed: the input check (it delays the first token), then the stream scanner: the answer arrives in
  small deltas and the classifier re-checks the new text plus a trailing window each time 64 characters have
  arrived or a sentence ends (the same rule and sizes as ai_service's `moderate_stream`, timed here without its
  SSE plumbing); reported are the total added per answer and the per-scan stall a chunk can wait.
Requests and answers are built from realistic sizes: prompts from the red-team set (both languages) and
answers of about 600 characters (English) or 300 (Chinese) joined from the labelled set's benign texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELLED = ROOT / "data" / "safety" / "labelled.jsonl"
REDTEAM = ROOT / "data" / "safety" / "redteam.jsonl"


def load(path: Path, split: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if tp + fp and tp + fn
                                                                                       else None)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def quality(rows: list[dict], moderator, categories: tuple, kind: str) -> dict:
    predictions = []
    for row in rows:
        found = {f.category for f in moderator.check(row["text"], kind=kind, lang=row["lang"])}
        predictions.append((row, found))
    result = {}
    for scope in ("all", "en", "zh"):
        members = [(r, f) for r, f in predictions if scope == "all" or r["lang"] == scope]
        per = {}
        for category in categories:
            tp = sum(category in f and r["label"] == category for r, f in members)
            fp = sum(category in f and r["label"] != category for r, f in members)
            fn = sum(category not in f and r["label"] == category for r, f in members)
            per[category] = prf(tp, fp, fn)
        flagged_any = [bool(f) for r, f in members if r["label"] == "none"]
        macro = [p["f1"] for p in per.values() if p["f1"] is not None]
        exact = sum((f == {r["label"]}) if r["label"] != "none" else not f for r, f in members)
        result[scope] = {"n": len(members), "per_category": per,
                         "none_false_alarm_rate": sum(flagged_any) / len(flagged_any) if flagged_any else None,
                         "macro_f1": sum(macro) / len(macro) if macro else None,
                         "exact_match": exact / len(members) if members else None}
    result["errors"] = [{"id": r["id"], "lang": r["lang"], "label": r["label"], "predicted": sorted(f)}
                        for r, f in predictions if (f != {r["label"]} if r["label"] != "none" else bool(f))]
    return result


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def build_requests(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(lang, prompt, answer) triples of realistic sizes."""
    rng = random.Random(seed)
    prompts = load(REDTEAM)
    benign = defaultdict(list)
    for row in load(LABELLED):
        if row["label"] == "none":
            benign[row["lang"]].append(row["text"])
    triples = []
    for i in range(count):
        prompt = prompts[i % len(prompts)] if i < len(prompts) else rng.choice(prompts)
        lang = prompt["lang"]
        target = 600 if lang == "en" else 300
        parts, size = [], 0
        while size < target:
            parts.append(rng.choice(benign[lang]))
            size += len(parts[-1])
        triples.append((lang, prompt["prompt"], (" " if lang == "en" else "").join(parts)))
    rng.shuffle(triples)
    return triples


def stream_deltas(answer: str, lang: str) -> list[str]:
    """Token-sized deltas: about 4 characters (English) or 1.5 (Chinese) each."""
    step = 4 if lang == "en" else 2
    return [answer[i:i + step] for i in range(0, len(answer), step)]


class StreamScan:
    """ai_service's stream check (ai_service/moderation.py `moderate_stream`), the classifier part of it: every
    SAFETY_STREAM_CHECK_CHARS (64) new characters, or at a sentence end, the new text plus the
    SAFETY_STREAM_WINDOW_CHARS (320) before it is checked as output; at [DONE] whatever is unchecked."""

    EVERY, WINDOW = 64, 320
    ENDS = ".!?。！？\n"

    def __init__(self, moderator, lang: str):
        self.moderator, self.lang, self.answer, self.checked_to, self.scans = moderator, lang, "", 0, 0

    def _verdict(self):
        if len(self.answer) == self.checked_to:
            return []
        text = self.answer[max(0, self.checked_to - self.WINDOW):]
        self.checked_to = len(self.answer)
        self.scans += 1
        return self.moderator.check(text, kind="output", lang=self.lang)

    def feed(self, delta: str):
        self.answer += delta
        if len(self.answer) - self.checked_to >= self.EVERY or (delta and delta.rstrip()[-1:] in self.ENDS):
            return self._verdict()
        return []

    def finish(self):
        return self._verdict()


def latency(moderator, count: int, seed: int) -> dict:
    triples = build_requests(count, seed)
    scanner_name = (f"ai_service's moderate_stream scan: every {StreamScan.EVERY} new characters or a sentence end, "
                    f"new text + {StreamScan.WINDOW} characters before it")
    scans = []
    non_streamed, streamed, stalls, inputs, outputs = [], [], [], [], []
    for lang, prompt, answer in triples:
        t0 = time.perf_counter()
        moderator.check(prompt, kind="input", lang=lang)
        t1 = time.perf_counter()
        moderator.check(answer, kind="output", lang=lang)
        t2 = time.perf_counter()
        inputs.append(t1 - t0)
        outputs.append(t2 - t1)
        non_streamed.append(t2 - t0)
        scanner = StreamScan(moderator, lang)
        total = t1 - t0  # the input check runs before the first token in both cases
        for delta in stream_deltas(answer, lang):
            s0 = time.perf_counter()
            scanner.feed(delta)
            spent = time.perf_counter() - s0
            total += spent
            if spent > 0.0005:
                stalls.append(spent)
        s0 = time.perf_counter()
        scanner.finish()
        total += time.perf_counter() - s0
        streamed.append(total)
        scans.append(scanner.scans)

    def ms(values):
        return {"p50_ms": round(1000 * percentile(values, 50), 1), "p95_ms": round(1000 * percentile(values, 95), 1),
                "mean_ms": round(1000 * statistics.mean(values), 1) if values else 0.0, "n": len(values)}

    return {"requests": len(triples), "stream_scanner": scanner_name, "input_check": ms(inputs),
            "output_check": ms(outputs), "non_streamed_added": ms(non_streamed), "streamed_added_total": ms(streamed),
            "stream_scan_stall": ms(stalls), "scans_per_answer": round(statistics.mean(scans), 1),
            "answer_chars": {"en": 600, "zh": 300}}


def fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def to_markdown(report: dict) -> str:
    q = report["quality"]
    lines = ["# Safety classifier: precision, recall and added latency", "",
             f"Machine: {report['machine']}. Labelled set `data/safety/labelled.jsonl` v{report['dataset_version']}, "
             f"split `{report['split']}` ({q['all']['n']} texts: {q['en']['n']} en, {q['zh']['n']} zh), "
             f"`check(kind=\"{report['kind']}\")`; checks: {', '.join(report['checks'])}. "
             f"Model load: {report['load_s']} s.", "",
             "| category | P (all) | R (all) | F1 (all) | P en | R en | P zh | R zh |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for category in report["categories"]:
        a, e, z = (q[s]["per_category"][category] for s in ("all", "en", "zh"))
        lines.append(f"| {category} | {fmt(a['precision'])} | {fmt(a['recall'])} | {fmt(a['f1'])} | "
                     f"{fmt(e['precision'])} | {fmt(e['recall'])} | {fmt(z['precision'])} | {fmt(z['recall'])} |")
    lines += ["", f"Macro F1: {fmt(q['all']['macro_f1'])} (en {fmt(q['en']['macro_f1'])}, zh {fmt(q['zh']['macro_f1'])}). "
              f"False alarms on `none` texts: {fmt(q['all']['none_false_alarm_rate'])} "
              f"(en {fmt(q['en']['none_false_alarm_rate'])}, zh {fmt(q['zh']['none_false_alarm_rate'])}). "
              f"Exact label match: {fmt(q['all']['exact_match'])}.", ""]
    lat = report["latency"]
    lines += ["## Added latency per request (in-process, 2 cores shared)", "",
              f"{lat['requests']} requests (red-team prompts; answers ~600 chars en / ~300 zh). "
              f"Stream scanner: {lat['stream_scanner']} ({lat['scans_per_answer']} scans per answer on average).", "",
              "| what | p50 ms | p95 ms | mean ms |", "|---|---:|---:|---:|"]
    for key, label in (("input_check", "input check (before the first token)"),
                       ("output_check", "output check of a whole answer"),
                       ("non_streamed_added", "**non-streamed: added per request**"),
                       ("streamed_added_total", "**streamed: added per request (input + all window scans)**"),
                       ("stream_scan_stall", "streamed: one window scan (stall a chunk can wait)")):
        v = lat[key]
        lines.append(f"| {label} | {v['p50_ms']} | {v['p95_ms']} | {v['mean_ms']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=["test", "dev", "all"])
    parser.add_argument("--kind", default="input", help="check kind for the labelled texts")
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "safety.md"))
    args = parser.parse_args(argv)

    from safety import CATEGORIES, get_moderator
    from training.safety_eval import dataset_version

    t0 = time.perf_counter()
    moderator = get_moderator()
    moderator.check("warm up", kind="input")
    moderator.check("预热", kind="input")
    load_s = round(time.perf_counter() - t0, 1)
    rows = load(LABELLED, None if args.split == "all" else args.split)
    print(f"[bench_safety] {len(rows)} labelled texts ({args.split}); latency over {args.requests} requests",
          file=sys.stderr, flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}",
              "dataset_version": dataset_version(LABELLED), "split": args.split, "kind": args.kind,
              "checks": list(getattr(moderator, "checks", [])), "load_s": load_s, "categories": list(CATEGORIES),
              "quality": quality(rows, moderator, tuple(CATEGORIES), args.kind)}
    print("[bench_safety] quality done; timing ...", file=sys.stderr, flush=True)
    report["latency"] = latency(moderator, args.requests, args.seed)
    text = to_markdown(report)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
