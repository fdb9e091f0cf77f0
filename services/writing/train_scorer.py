"""Train and evaluate the essay scorer on ASAP-AES (../shared/data/asap_aes), reproducibly, in one command:

    python -m services.writing.train_scorer [--data ../shared/data/asap_aes] [--out services/writing/models/scorer.pkl]
                                            [--eval-only] [--report bench/results/writing_scorer.md]

Evaluation (printed and written to the report):
  cross-prompt: for each prompt P in 1-6, 8, train on the other prompts (scores normalised to [0, 1] over each
    prompt's official range), predict P, map back to P's range, quadratic weighted kappa against the human score;
  prompt-specific: 5-fold CV inside each prompt (the NEA folds), the usual ASAP figure, for comparison;
  traits: prompt 8's six traits, 5-fold CV.
Then the shipped model is trained on all seven prompts (holistic) and prompt 8 (trait residuals).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from services.writing.scorer import DEFAULT_MODEL_PATH, FEATURES, TRAITS, feature_vector, make_regressor

csv.field_size_limit(sys.maxsize)
# Official score ranges (domain1_score) per prompt.
RANGES = {1: (2, 12), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4), 8: (0, 60)}
TRAIT_RANGE = (1, 6)
PROMPTS = tuple(RANGES)


def qwk(a, b, lo: int, hi: int) -> float:
    a, b = np.asarray(a, int) - lo, np.asarray(b, int) - lo
    n = hi - lo + 1
    observed = np.zeros((n, n))
    for i, j in zip(a, b):
        observed[i, j] += 1
    weights = np.array([[(i - j) ** 2 / (n - 1) ** 2 for j in range(n)] for i in range(n)])
    expected = np.outer(observed.sum(1), observed.sum(0)) / max(1, observed.sum())
    denom = (weights * expected).sum()
    return 1.0 - (weights * observed).sum() / denom if denom else 1.0


def load(data: Path) -> list[dict]:
    folds = {}
    with open(data / "nea_folds.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            folds[int(row["essay_id"])] = int(row["test_fold"])
    rows = []
    with open(data / "training_set_rel3.tsv", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        for parts in reader:
            row = dict(zip(header, parts))
            prompt = int(row["essay_set"])
            if prompt not in RANGES:
                continue
            essay = row["essay"]
            if len(essay) >= 2 and essay[0] == '"' and essay[-1] == '"':
                essay = essay[1:-1].replace('""', '"')
            traits = None
            if prompt == 8:
                # Trait score = mean of the available raters (rater3 where present resolves disagreements).
                traits = []
                for t in range(1, 7):
                    vals = [float(row[f"rater{r}_trait{t}"]) for r in (1, 2, 3) if row.get(f"rater{r}_trait{t}", "").strip()]
                    traits.append(float(np.mean(vals)) if vals else np.nan)
            rows.append({"id": int(row["essay_id"]), "prompt": prompt, "essay": essay,
                         "score": int(float(row["domain1_score"])), "traits": traits,
                         "fold": folds.get(int(row["essay_id"]), int(row["essay_id"]) % 5)})
    return rows


def featurise(rows: list[dict], cache: Path | None) -> np.ndarray:
    digest = hashlib.sha256(("|".join(FEATURES) + str(len(rows))).encode()).hexdigest()[:12]
    if cache and cache.exists():
        data = np.load(cache)
        if str(data["digest"]) == digest:
            return data["x"]
    xs, started = [], time.time()
    for i, row in enumerate(rows):
        xs.append(feature_vector(row["essay"]))
        if (i + 1) % 1000 == 0:
            print(f"  features {i + 1}/{len(rows)} ({time.time() - started:.0f} s)", flush=True)
    x = np.vstack(xs)
    if cache:
        np.savez(cache, x=x, digest=digest)
    return x


def norm(score: float, prompt: int) -> float:
    lo, hi = RANGES[prompt]
    return (score - lo) / (hi - lo)


def denorm(values: np.ndarray, prompt: int) -> np.ndarray:
    lo, hi = RANGES[prompt]
    return np.clip(np.rint(lo + np.clip(values, 0, 1) * (hi - lo)), lo, hi).astype(int)


def evaluate(rows, x, y, prompts) -> dict:
    out = {"cross_prompt": {}, "prompt_specific": {}, "traits": {}}
    for p in PROMPTS:
        train, test = prompts != p, prompts == p
        model = make_regressor().fit(x[train], y[train])
        pred = denorm(model.predict(x[test]), p)
        gold = np.array([r["score"] for r, t in zip(rows, test) if t])
        out["cross_prompt"][p] = qwk(gold, pred, *RANGES[p])
        print(f"  cross-prompt P{p}: QWK {out['cross_prompt'][p]:.3f}", flush=True)
    folds = np.array([r["fold"] for r in rows])
    for p in PROMPTS:
        idx = np.where(prompts == p)[0]
        gold, pred = [], []
        for k in range(5):
            tr, te = idx[folds[idx] != k], idx[folds[idx] == k]
            model = make_regressor().fit(x[tr], y[tr])
            pred.extend(denorm(model.predict(x[te]), p))
            gold.extend(rows[i]["score"] for i in te)
        out["prompt_specific"][p] = qwk(gold, pred, *RANGES[p])
        print(f"  prompt-specific P{p}: QWK {out['prompt_specific'][p]:.3f}", flush=True)
    idx = np.where(prompts == 8)[0]
    traits = np.array([rows[i]["traits"] for i in idx])
    for t, name in enumerate(TRAITS):
        gold, pred = [], []
        for k in range(5):
            tr = idx[folds[idx] != k]
            te_mask = folds[idx] == k
            hol = make_regressor().fit(x[prompts != 8], y[prompts != 8])  # holistic never sees prompt 8 here
            tr_mask = folds[idx] != k
            ok = tr_mask & ~np.isnan(traits[:, t])
            base_tr = hol.predict(x[idx[ok]])
            resid = make_regressor().fit(x[idx[ok]], (traits[ok, t] - 1) / 5 - base_tr)
            p_te = np.clip(hol.predict(x[idx[te_mask]]) + resid.predict(x[idx[te_mask]]), 0, 1)
            keep = ~np.isnan(traits[te_mask, t])
            pred.extend(np.rint(1 + 5 * p_te[keep]).astype(int))
            gold.extend(np.rint(traits[te_mask, t][keep]).astype(int))
            del tr
        out["traits"][name] = qwk(gold, pred, *TRAIT_RANGE)
        print(f"  trait {name} (P8, 5-fold, holistic trained without P8): QWK {out['traits'][name]:.3f}", flush=True)
    return out


def report_md(result: dict, n: int, seconds: float) -> str:
    cp, ps = result["cross_prompt"], result["prompt_specific"]
    lines = ["# Writing scorer: ASAP-AES quadratic weighted kappa", "",
             f"{n} essays (prompts 1-6, 8); features: {len(FEATURES)} prompt-independent text features; "
             f"regressor: gradient-boosted trees on scores normalised to [0, 1]; {seconds:.0f} s.", "",
             "| prompt | range | cross-prompt QWK (trained on the other prompts) | prompt-specific QWK (5-fold) |",
             "|---|---|---|---|"]
    for p in PROMPTS:
        lines.append(f"| {p} | {RANGES[p][0]}-{RANGES[p][1]} | {cp[p]:.3f} | {ps[p]:.3f} |")
    lines.append(f"| **mean** | | **{np.mean(list(cp.values())):.3f}** | **{np.mean(list(ps.values())):.3f}** |")
    lines += ["", "Prompt 8 traits (1-6), 5-fold within prompt 8, residual on a holistic model trained without prompt 8:",
              "", "| trait | QWK |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in result["traits"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/asap_aes"))
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--report", type=Path, default=Path("bench/results/writing_scorer.md"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tutorstack_writing_features.npz"))
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N essays per prompt (quick checks)")
    args = ap.parse_args(argv)
    started = time.time()
    rows = load(args.data)
    if args.limit:
        kept, seen = [], {}
        for r in rows:
            seen[r["prompt"]] = seen.get(r["prompt"], 0) + 1
            if seen[r["prompt"]] <= args.limit:
                kept.append(r)
        rows = kept
        args.cache = None
    print(f"{len(rows)} essays; computing features", flush=True)
    x = featurise(rows, args.cache)
    prompts = np.array([r["prompt"] for r in rows])
    y = np.array([norm(r["score"], r["prompt"]) for r in rows])
    result = None
    if not args.no_eval:
        result = evaluate(rows, x, y, prompts)
        md = report_md(result, len(rows), time.time() - started)
        print(md)
        if args.report and not args.limit:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(md)
    if args.eval_only:
        return 0
    holistic = make_regressor().fit(x, y)
    idx = np.where(prompts == 8)[0]
    traits = np.array([rows[i]["traits"] for i in idx])
    base = holistic.predict(x[idx])
    trait_models = {}
    for t, name in enumerate(TRAITS):
        ok = ~np.isnan(traits[:, t])
        trait_models[name] = make_regressor().fit(x[idx[ok]], (traits[ok, t] - 1) / 5 - base[ok])
    info = {"trained_on": "ASAP-AES prompts 1-6, 8 (holistic); prompt 8 traits", "essays": len(rows),
            "features": list(FEATURES)}
    if result:
        info["cross_prompt_qwk"] = {str(k): round(v, 4) for k, v in result["cross_prompt"].items()}
        info["cross_prompt_qwk_mean"] = round(float(np.mean(list(result["cross_prompt"].values()))), 4)
        info["prompt_specific_qwk_mean"] = round(float(np.mean(list(result["prompt_specific"].values()))), 4)
    bundle = {"version": "asap-gbr-1", "features": list(FEATURES), "holistic": holistic, "traits": trait_models,
              "info": info}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        pickle.dump(bundle, fh)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB) in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
