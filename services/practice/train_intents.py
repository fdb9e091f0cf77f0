"""Train and evaluate the intent classifier on AnnoMI (one command, reproducible):

    python -m services.practice.train_intents --data ../shared/data/annomi --out services/practice/models

Labels. AnnoMI annotates each therapist utterance with a main behaviour (question, reflection,
therapist_input, other) and a subtype. Mapping: question/open -> open_question, question/closed ->
closed_question, reflection/simple|complex -> simple|complex_reflection, therapist_input/information and
/negotiation -> giving_information (negotiation is agenda and permission talk: structuring, not
persuading), therapist_input/advice and /options -> advice, other -> other. AnnoMI does not annotate
affirmations: an `other` utterance that praises the client (a small pattern list below) is weakly
labelled `affirmation`; its F1 is measured against those weak labels, so read it as a consistency
figure, not as validity. Utterances annotated by several annotators take the majority label.

Evaluation is by transcript (GroupKFold over transcript_id: no transcript is in both train and test).
Reported: macro-F1 and per-class F1 on the 4 main behaviours and on the 8 labels, against the majority
baseline and the rule engine's keyword intents; expected calibration error before/after the temperature.
The regularisation C is chosen on the training folds only (inner group split), never on the test fold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from services.practice.intents import (
    LABELS,
    MAIN_LABELS,
    MAIN_OF,
    Embedder,
    IntentModel,
    build_features,
)
from services.practice.keyword_intents import keyword_intent

SUBTYPE_TO_LABEL = {
    ("question", "open"): "open_question",
    ("question", "closed"): "closed_question",
    ("reflection", "simple"): "simple_reflection",
    ("reflection", "complex"): "complex_reflection",
    ("therapist_input", "information"): "giving_information",
    ("therapist_input", "negotiation"): "giving_information",
    ("therapist_input", "advice"): "advice",
    ("therapist_input", "options"): "advice",
}
AFFIRMATION = re.compile(
    r"\b(good for you|well done|congratulations|proud of (you|yourself)|you should be proud|i (really )?appreciate (your|you|that you)|"
    r"brave|courage|guts|your strength|you're strong|"
    r"you('ve| have) (done|made|worked|come|been doing|really|already|got some good|got a (really )?good)|"
    r"you did (a|really|great|well|it)|you('re| are) (making|doing|clearly|obviously|really trying|committed)|"
    r"(that's|that is|it's|that sounds like) (a )?(really |very |such a )?(great|wonderful|excellent|impressive|fantastic|"
    r"amazing|awesome|exciting|strong|good (goal|decision|idea|plan|start|step|point|thing|change|progress|insight))|"
    r"great (job|work|idea|goal|plan|progress)|good (job|work|thinking)|nice (job|work)|impressive)\b", re.I)
C_GRID = (0.001, 0.0025, 0.005, 0.01)
CONTEXT_DROPOUT = 0.5  # half the training rows are seen without the previous turn: /v1/intents may lack it


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_annomi(data_dir: Path):
    """Therapist utterances: text, previous client turn (or None), label, transcript id."""
    import pandas as pd

    full = pd.read_csv(data_dir / "AnnoMI-full.csv", keep_default_na=False)
    rows = []
    for (tid, uid), group in full.groupby(["transcript_id", "utterance_id"], sort=True):
        first = group.iloc[0]
        if first["interlocutor"] != "therapist":
            continue
        labels = []
        for _, r in group.iterrows():
            main = r["main_therapist_behaviour"]
            if main == "other":
                labels.append("other")
                continue
            column = {"question": "question_subtype", "reflection": "reflection_subtype",
                      "therapist_input": "therapist_input_subtype"}[main]
            label = SUBTYPE_TO_LABEL.get((main, r[column]))
            if label:
                labels.append(label)
        if not labels:
            continue
        label = Counter(labels).most_common(1)[0][0]
        text = str(first["utterance_text"]).strip()
        if label == "other" and AFFIRMATION.search(text):
            label = "affirmation"
        rows.append({"transcript_id": int(tid), "utterance_id": int(uid), "text": text, "label": label})
    # previous turn, when the client spoke immediately before
    client = {(int(r.transcript_id), int(r.utterance_id)): str(r.utterance_text)
              for r in full[full.interlocutor == "client"].drop_duplicates(["transcript_id", "utterance_id"])
              .itertuples()}
    for row in rows:
        row["previous"] = client.get((row["transcript_id"], row["utterance_id"] - 1))
    return rows


class CachedEmbedder:
    """MiniLM embeddings cached on disk by text hash (re-runs of the training script are fast)."""

    def __init__(self, cache: Path | None):
        self.embedder = Embedder()
        self.cache = cache
        self.store: dict[str, np.ndarray] = {}
        if cache and cache.exists():
            with np.load(cache) as data:
                self.store = {k: data[k] for k in data.files}

    def __call__(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.store}.items())
        if missing:
            log(f"embedding {len(missing)} texts with all-MiniLM-L6-v2 ...")
            vectors = self.embedder.encode([t for _, t in missing])
            self.store.update({k: v for (k, _), v in zip(missing, vectors)})
            if self.cache:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(self.cache, **self.store)
        return np.stack([self.store[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)


def fit(X: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    clf.fit(scaler.transform(X), y)
    # expand to every label (a fold may lack a rare class)
    coef = np.zeros((len(LABELS), X.shape[1]), np.float32)
    intercept = np.full(len(LABELS), -30.0, np.float32)
    for i, label in enumerate(clf.classes_):
        coef[LABELS.index(label)] = clf.coef_[i]
        intercept[LABELS.index(label)] = clf.intercept_[i]
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    return IntentModel(scaler.mean_, scale, coef, intercept, 1.0, LABELS, {})


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 80)):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -logp[np.arange(len(y_idx)), y_idx].mean()
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def ece(probs: np.ndarray, y_idx: np.ndarray, bins: int = 10) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_idx
    total = 0.0
    for lo in np.linspace(0, 1, bins, endpoint=False):
        mask = (conf > lo) & (conf <= lo + 1.0 / bins)
        if mask.any():
            total += mask.mean() * abs(conf[mask].mean() - correct[mask].mean())
    return float(total)


def softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = z / t
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def to_main(probs: np.ndarray) -> np.ndarray:
    out = np.zeros((len(probs), len(MAIN_LABELS)))
    for j, label in enumerate(LABELS):
        out[:, MAIN_LABELS.index(MAIN_OF[label])] += probs[:, j]
    return out


def predict_labels(probs: np.ndarray) -> tuple[list[str], list[str]]:
    """Main = argmax of summed probabilities; fine = likeliest label inside that main behaviour."""
    main_p = to_main(probs)
    mains, fines = [], []
    for row, mrow in zip(probs, main_p):
        main = MAIN_LABELS[int(mrow.argmax())]
        fine = max((label for label in LABELS if MAIN_OF[label] == main), key=lambda lb: row[LABELS.index(lb)])
        mains.append(main)
        fines.append(fine)
    return mains, fines


def f1_table(y_true: list[str], y_pred: list[str], labels) -> dict:
    from sklearn.metrics import f1_score

    per = f1_score(y_true, y_pred, labels=list(labels), average=None, zero_division=0)
    return {"macro_f1": float(np.mean(per)), "per_class": {lb: float(f) for lb, f in zip(labels, per)}}


def features_for(rows, embed, with_context: bool, rng=None) -> np.ndarray:
    contexts = []
    for row in rows:
        keep = with_context and (rng is None or rng.random() >= CONTEXT_DROPOUT)
        contexts.append(row["previous"] if keep else None)
    return build_features([r["text"] for r in rows], contexts, embed)


def choose_c(rows, embed, groups, seed: int) -> float:
    """Inner transcript-grouped split of the training rows; the C with the best main macro-F1."""
    from sklearn.model_selection import GroupKFold

    inner = GroupKFold(n_splits=3)
    idx = np.arange(len(rows))
    scores = {}
    rng = np.random.default_rng(seed)
    X_ctx = features_for(rows, embed, True, rng)
    X_none = features_for(rows, embed, False)
    y = np.array([r["label"] for r in rows])
    for C in C_GRID:
        preds, truth = [], []
        for tr, te in inner.split(idx, groups=groups):
            model = fit(X_ctx[tr], y[tr], C)
            preds += predict_labels(model.proba(X_none[te]))[0]
            truth += [MAIN_OF[lb] for lb in y[te]]
        scores[C] = f1_table(truth, preds, MAIN_LABELS)["macro_f1"]
    return max(scores, key=scores.get)


def evaluate(rows, embed, folds: int, seed: int) -> dict:
    from sklearn.model_selection import GroupKFold

    groups = np.array([r["transcript_id"] for r in rows])
    y = np.array([r["label"] for r in rows])
    rng = np.random.default_rng(seed)
    X_train_all = features_for(rows, embed, True, rng)
    X_ctx = features_for(rows, embed, True)
    X_none = features_for(rows, embed, False)
    oof_logits = {"none": np.zeros((len(rows), len(LABELS))), "context": np.zeros((len(rows), len(LABELS)))}
    chosen = []
    majority_pred = np.empty(len(rows), dtype=object)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(X_none, groups=groups)):
        C = choose_c([rows[i] for i in tr], embed, groups[tr], seed + k)
        chosen.append(C)
        model = fit(X_train_all[tr], y[tr], C)
        oof_logits["none"][te] = model.logits(X_none[te])
        oof_logits["context"][te] = model.logits(X_ctx[te])
        majority_pred[te] = Counter(y[tr]).most_common(1)[0][0]
        log(f"fold {k + 1}/{folds}: C={C}, {len(set(groups[te]))} test transcripts, {len(te)} utterances")
    y_idx = np.array([LABELS.index(lb) for lb in y])
    y_main = [MAIN_OF[lb] for lb in y]
    report: dict = {"n_utterances": len(rows), "n_transcripts": int(len(set(groups))), "folds": folds,
                    "label_counts": dict(Counter(y)), "C_chosen_per_fold": chosen}
    for name, logits in oof_logits.items():
        t = fit_temperature(logits, y_idx)  # on out-of-fold logits (a calibration check, not a test figure)
        probs = softmax(logits, t)
        mains, fines = predict_labels(probs)
        report[f"classifier_{name}"] = {
            "main": f1_table(y_main, mains, MAIN_LABELS),
            "fine": f1_table(list(y), fines, LABELS),
            "ece_raw": ece(softmax(logits), y_idx), "ece_calibrated": ece(probs, y_idx), "temperature": t,
            "ece_main_calibrated": ece(to_main(probs), np.array([MAIN_LABELS.index(m) for m in y_main])),
        }
    kw = [keyword_intent(r["text"]) for r in rows]
    report["keyword_rules"] = {"main": f1_table(y_main, [MAIN_OF[k] for k in kw], MAIN_LABELS),
                               "fine": f1_table(list(y), kw, LABELS)}
    report["majority"] = {"main": f1_table(y_main, [MAIN_OF[m] for m in majority_pred], MAIN_LABELS),
                          "fine": f1_table(list(y), list(majority_pred), LABELS)}
    return report


def markdown(report: dict) -> str:
    lines = [f"Intent classifier, AnnoMI: {report['n_utterances']} therapist utterances, "
             f"{report['n_transcripts']} transcripts, {report['folds']}-fold cross-validation grouped by transcript.",
             "", "| system | main macro-F1 | " + " | ".join(f"F1 {m}" for m in MAIN_LABELS) + " | 8-label macro-F1 |",
             "|---|---|" + "---|" * len(MAIN_LABELS) + "---|"]
    systems = [("classifier (no previous turn)", "classifier_none"), ("classifier (with previous turn)",
               "classifier_context"), ("rule engine keyword intents", "keyword_rules"), ("majority class", "majority")]
    for title, key in systems:
        r = report[key]
        lines.append(f"| {title} | {r['main']['macro_f1']:.3f} | "
                     + " | ".join(f"{r['main']['per_class'][m]:.3f}" for m in MAIN_LABELS)
                     + f" | {r['fine']['macro_f1']:.3f} |")
    lines += ["", "| label | " + " | ".join(t for t, _ in systems) + " |", "|---|" + "---|" * len(systems)]
    for label in LABELS:
        lines.append(f"| {label} ({report['label_counts'].get(label, 0)}) | "
                     + " | ".join(f"{report[k]['fine']['per_class'][label]:.3f}" for _, k in systems) + " |")
    c = report["classifier_none"]
    lines += ["", f"Calibration (no previous turn): ECE {c['ece_raw']:.3f} raw -> {c['ece_calibrated']:.3f} with "
              f"temperature {c['temperature']:.2f}; main-behaviour ECE {c['ece_main_calibrated']:.3f}. "
              "affirmation F1 is against weak (pattern) labels."]
    return "\n".join(lines)


def train_final(rows, embed, seed: int) -> IntentModel:
    groups = np.array([r["transcript_id"] for r in rows])
    y = np.array([r["label"] for r in rows])
    C = choose_c(rows, embed, groups, seed)
    X = features_for(rows, embed, True, np.random.default_rng(seed))
    model = fit(X, y, C)
    # temperature from out-of-fold logits of the same recipe (calibration never sees its own training rows)
    from sklearn.model_selection import GroupKFold

    X_none = features_for(rows, embed, False)
    logits = np.zeros((len(rows), len(LABELS)))
    for tr, te in GroupKFold(n_splits=5).split(X, groups=groups):
        logits[te] = fit(X[tr], y[tr], C).logits(X_none[te])
    model.temperature = fit_temperature(logits, np.array([LABELS.index(lb) for lb in y]))
    model.meta = {"version": time.strftime("annomi-minilm-lr-%Y%m%d"), "C": C, "n_train": len(rows),
                  "embedding": "all-MiniLM-L6-v2", "labels": list(LABELS), "seed": seed}
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/annomi"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", type=Path, default=Path(".tutorstack/cache/annomi_minilm.npz"))
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--report", type=Path, default=Path("bench/results/practice_intents.md"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    rows = load_annomi(args.data)
    log(f"{len(rows)} therapist utterances from {len({r['transcript_id'] for r in rows})} transcripts: "
        f"{dict(Counter(r['label'] for r in rows))}")
    embed = CachedEmbedder(args.cache)
    report = evaluate(rows, embed, args.folds, args.seed)
    table = markdown(report)
    print(table)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("# Practice: intent classifier\n\n"
                               "`python -m services.practice.train_intents` (2 CPU cores)\n\n" + table + "\n")
        (args.out / "intent_classifier_eval.json").write_text(json.dumps(report, indent=1))
    if not args.eval_only:
        model = train_final(rows, embed, args.seed)
        model.save(args.out / "intent_classifier.npz")
        log(f"saved {args.out / 'intent_classifier.npz'} (C={model.meta['C']}, T={model.temperature:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
