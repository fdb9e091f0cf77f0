"""Calibrates the embedding thresholds on the dev split (safety/dev/dev.jsonl) and writes
safety/thresholds.yaml. The dev split is ours, written for calibration only; held-out figures
come from bench/bench_safety.py on data/safety (not used here).

    python -m safety.calibrate            # prints per-category precision/recall on dev, writes thresholds
    python -m safety.calibrate --dry-run  # prints only
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import yaml

from safety.moderator import CATEGORIES, EMBEDDED_CATEGORIES, FLAG_AT, THRESHOLDS_FILE, Moderator

DEV = Path(__file__).parent / "dev" / "dev.jsonl"
MARGINS = (-0.05, -0.02, 0.0, 0.02, 0.05, 0.08)
PROFANITY_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)


def load_dev(path: Path = DEV) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flagged(moderator: Moderator, signal, thresholds) -> set[str]:
    spans, combined = moderator.combine(*signal, thresholds=thresholds)
    return {f.category for f in spans} | {c for c, (s, _) in combined.items() if s >= FLAG_AT}


def f1(rows, predictions, category) -> tuple[float, float, float]:
    tp = sum(1 for r, p in zip(rows, predictions) if category in p and category in r["labels"])
    fp = sum(1 for r, p in zip(rows, predictions) if category in p and category not in r["labels"])
    fn = sum(1 for r, p in zip(rows, predictions) if category not in p and category in r["labels"])
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    beta2 = 0.25  # F0.5: precision counts more than recall (over-refusal is a cost for students too)
    return precision, recall, ((1 + beta2) * precision * recall / (beta2 * precision + recall)
                               if precision + recall else 0.0)


def calibrate(moderator: Moderator, rows: list[dict]) -> dict:
    signals = [moderator.signals(r["text"]) for r in rows]
    thresholds = copy.deepcopy(moderator.thresholds) or {}
    thresholds.setdefault("embedding", {})
    for lang in ("en", "zh"):
        picked = [i for i, (r, s) in enumerate(zip(rows, signals)) if s[2] is not None and s[2][0] == lang]
        if not picked:
            continue
        sims = np.concatenate([signals[i][2][1][c][:, 0] for i in picked for c in EMBEDDED_CATEGORIES])
        grid = np.round(np.arange(np.percentile(sims, 5), np.percentile(sims, 99.5) + 0.005, 0.005), 3)
        best_total, best_settings = -1.0, None
        for margin in MARGINS:
            settings = {"temperature": 0.02, "margin": margin}
            total = 0.0
            for category in EMBEDDED_CATEGORIES:
                scores = []
                for t in grid:
                    trial = copy.deepcopy(thresholds)
                    trial["embedding"][lang] = {**settings, "default": float(t)}
                    predictions = [flagged(moderator, signals[i], trial) for i in picked]
                    scores.append((f1([rows[i] for i in picked], predictions, category)[2], float(t)))
                top = max(s for s, _ in scores)
                # the upper part of the best plateau: precision first, and not fitted to the lowest dev positive
                plateau = sorted(t for s, t in scores if s >= top - 1e-9)
                settings[category] = round(plateau[(3 * len(plateau)) // 4], 3)
                total += top
            if total > best_total:
                best_total, best_settings = total, settings
        thresholds["embedding"][lang] = best_settings
        print(f"{lang}: margin {best_settings['margin']}, mean F0.5 {best_total / len(EMBEDDED_CATEGORIES):.3f}")
    en_rows = [i for i, r in enumerate(rows) if r["lang"] == "en"]
    best = max(PROFANITY_WEIGHTS, key=lambda w: (f1([rows[i] for i in en_rows], [
        flagged(moderator, signals[i], {**thresholds, "profanity_weight": w}) for i in en_rows], "harassment")[2], -w))
    thresholds["profanity_weight"] = best
    return thresholds, signals


def report(moderator: Moderator, rows, signals, thresholds) -> str:
    lines = ["| category | lang | precision | recall | F0.5 |", "|---|---|---|---|---|"]
    for lang in ("en", "zh"):
        picked = [i for i, r in enumerate(rows) if r["lang"] == lang]
        predictions = [flagged(moderator, signals[i], thresholds) for i in picked]
        for category in CATEGORIES:
            p, r, f = f1([rows[i] for i in picked], predictions, category)
            lines.append(f"| {category} | {lang} | {p:.2f} | {r:.2f} | {f:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    moderator = Moderator()
    rows = load_dev()
    thresholds, signals = calibrate(moderator, rows)
    print(report(moderator, rows, signals, thresholds))
    if not args.dry_run:
        header = "# Written by `python -m safety.calibrate` from safety/dev/dev.jsonl (see safety/moderator.py).\n"
        THRESHOLDS_FILE.write_text(header + yaml.safe_dump(thresholds, sort_keys=False), encoding="utf-8")
        print(f"wrote {THRESHOLDS_FILE}")


if __name__ == "__main__":
    main()
