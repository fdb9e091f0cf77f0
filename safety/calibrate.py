"""Calibrates the embedding thresholds on the dev split (safety/dev/dev.jsonl, plus the `dev` split of
data/safety/labelled.jsonl) and writes safety/thresholds.yaml. safety/dev is ours, written for
calibration only; held-out figures come from bench/bench_safety.py on the labelled set's `test` split,
which is never read here.

    python -m safety.calibrate            # prints per-category precision/recall on dev, writes thresholds
    python -m safety.calibrate --dry-run  # prints only
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
from pathlib import Path

import numpy as np
import yaml

from safety.moderator import CATEGORIES, EMBEDDED_CATEGORIES, FLAG_AT, THRESHOLDS_FILE, Moderator

DEV = Path(__file__).parent / "dev" / "dev.jsonl"
# The labelled set's own `dev` split is for tuning too (its `test` split is never read here).
LABELLED = Path(__file__).resolve().parents[1] / "data" / "safety" / "labelled.jsonl"
MARGINS = (-0.05, -0.02, 0.0, 0.02, 0.05, 0.08)
# e5's similarities are compressed (almost everything lies within 0.83-0.96), so its useful margins
# over the best hard negative are a few hundredths: a finer grid than MiniLM's
MARGINS_BY_LANG = {"zh": (0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03)}
# how far a category's seeds may be behind another category's and still count (None: not checked);
# see Moderator.combine
RIVAL_SLACKS = {"zh": (None, 0.0, 0.01, 0.02)}
# where on the best plateau of thresholds to settle (0.5: its middle, as far from the last dev negative as
# from the first dev positive); see MARGINS_BY_LANG for why e5 differs
PLATEAU_AT = {"en": 0.75, "zh": 0.75}
PROFANITY_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)


def load_dev(path: Path = DEV, labelled: Path | None = LABELLED) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if labelled is not None and labelled.is_file():
        for line in labelled.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("split") == "dev":
                rows.append({"text": row["text"], "lang": row["lang"],
                             "labels": [] if row["label"] == "none" else [row["label"]]})
    return rows


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


def calibrate(moderator: Moderator, rows: list[dict], langs=("en", "zh")) -> dict:
    signals = [moderator.signals(r["text"]) for r in rows]
    thresholds = copy.deepcopy(moderator.thresholds) or {}
    thresholds.setdefault("embedding", {})
    for lang in langs:
        picked = [i for i, (r, s) in enumerate(zip(rows, signals)) if s[2] is not None and s[2][0] == lang]
        if not picked:
            continue
        sims = np.concatenate([signals[i][2][1][c][:, 0] for i in picked for c in EMBEDDED_CATEGORIES])
        grid = np.round(np.arange(np.percentile(sims, 5), np.percentile(sims, 99.5) + 0.005, 0.005), 3)
        best_total, best_settings = -1.0, None
        for margin, rival_slack in itertools.product(MARGINS_BY_LANG.get(lang, MARGINS),
                                                     RIVAL_SLACKS.get(lang, (None,))):
            settings = {"temperature": 0.02, "margin": margin}
            if rival_slack is not None:
                settings["rival_slack"] = rival_slack
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
                settings[category] = round(plateau[int(PLATEAU_AT.get(lang, 0.75) * len(plateau))], 3)
                total += top
            if total > best_total:
                best_total, best_settings = total, settings
        thresholds["embedding"][lang] = best_settings
        print(f"{lang}: margin {best_settings['margin']}, rival slack {best_settings.get('rival_slack')}, mean F0.5 {best_total / len(EMBEDDED_CATEGORIES):.3f}")
    if "en" not in langs:
        return thresholds, signals
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
    parser.add_argument("--lang", choices=("en", "zh"), action="append",
                        help="recalibrate only this language (repeatable; default both); the others keep theirs")
    args = parser.parse_args()
    moderator = Moderator()
    rows = load_dev()
    thresholds, signals = calibrate(moderator, rows, tuple(args.lang or ("en", "zh")))
    print(report(moderator, rows, signals, thresholds))
    if not args.dry_run:
        header = ("# Written by `python -m safety.calibrate` from safety/dev/dev.jsonl and the labelled set's dev"
                  " split (see safety/moderator.py).\n")
        THRESHOLDS_FILE.write_text(header + yaml.safe_dump(thresholds, sort_keys=False), encoding="utf-8")
        print(f"wrote {THRESHOLDS_FILE}")


if __name__ == "__main__":
    main()
