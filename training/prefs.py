"""`python -m training prefs export`: the feedback store's votes -> prefs.jsonl for `training dpo`.

Reads the feedback service's SQLite store (FEEDBACK_DB_PATH, read-only) and writes one
`{"id", "prompt", "chosen", "rejected", "meta"}` record per distinct comparison:

- arena votes: `a` -> chosen = answer A, rejected = answer B; `b` the reverse; `tie` and
  `both_bad` carry no preference (skipped, counted).
- thumbs on ordinary chat answers: for one prompt, every answer voted up is paired with every
  answer voted down (a thumbs vote alone has no pair: skipped, counted).
- all votes on the same prompt and the same two answers form one group: its direction is the
  majority and its agreement = majority / decisive votes. Groups below `--min-agreement`, or
  without a majority, are skipped; the group writes one record (duplicates removed).
Filters: mode, adapter family, date range (created_at, UTC). The report says what was written
and, per reason, what was skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path


def default_db() -> Path:
    if os.environ.get("FEEDBACK_DB_PATH"):
        return Path(os.environ["FEEDBACK_DB_PATH"])
    home = Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))
    return home / "feedback" / "feedback.db"


def parse_date(value: str | None) -> float | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def read_votes(db: str | Path) -> list[dict]:
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"feedback store not found: {path} (FEEDBACK_DB_PATH)")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM votes ORDER BY created_at")]
    finally:
        con.close()


def build_pairs(votes: list[dict], *, mode: str | None = None, family: str | None = None,
                since: float | None = None, until: float | None = None, min_agreement: float = 0.0,
                min_votes: int = 1) -> tuple[list[dict], dict]:
    skipped: Counter = Counter()
    considered = 0
    # group key -> {answer text -> [votes preferring it]}, plus the texts as first seen
    groups: dict[tuple, dict] = {}
    thumbs: dict[tuple, dict[str, list]] = defaultdict(lambda: {"up": [], "down": []})
    for v in votes:
        if mode and v.get("mode") != mode:
            skipped["filtered: mode"] += 1
            continue
        if family and (v.get("family") or v.get("mode")) != family:
            skipped["filtered: family"] += 1
            continue
        if since is not None and v["created_at"] < since:
            skipped["filtered: before --since"] += 1
            continue
        if until is not None and v["created_at"] >= until:
            skipped["filtered: after --until"] += 1
            continue
        considered += 1
        prompt = _norm(v.get("prompt"))
        if not prompt:
            skipped["no prompt stored"] += 1
            continue
        if v["kind"] == "thumbs":
            if not _norm(v.get("answer_a")):
                skipped["thumbs without the answer text"] += 1
                continue
            thumbs[(v.get("mode"), prompt)][v["vote"]].append(v)
            continue
        if v["vote"] in ("tie", "both_bad"):
            skipped[f"no preference ({v['vote']})"] += 1
            continue
        a, b = _norm(v.get("answer_a")), _norm(v.get("answer_b"))
        if not a or not b:
            skipped["empty answer"] += 1
            continue
        if a == b:
            skipped["identical answers"] += 1
            continue
        winner, loser = (a, b) if v["vote"] == "a" else (b, a)
        winner_model = v.get("model_a") if v["vote"] == "a" else v.get("model_b")
        loser_model = v.get("model_b") if v["vote"] == "a" else v.get("model_a")
        key = (v.get("mode"), prompt, frozenset((a, b)))
        group = groups.setdefault(key, {"votes": Counter(), "models": {}, "ids": [], "mode": v.get("mode"),
                                        "family": v.get("family"), "prompt": v.get("prompt").strip()})
        group["votes"][winner] += 1
        group["votes"].setdefault(loser, 0)
        group["models"][winner], group["models"][loser] = winner_model, loser_model
        group["ids"].append(v["id"])
        group["n"] = group.get("n", 0) + 1
    # thumbs: pair ups with downs on the same prompt
    for (mode_, prompt), sides in thumbs.items():
        if not sides["up"] or not sides["down"]:
            skipped["thumbs without an opposite vote on the same prompt"] += len(sides["up"]) + len(sides["down"])
            continue
        for up in sides["up"]:
            for down in sides["down"]:
                a, b = _norm(up["answer_a"]), _norm(down["answer_a"])
                if a == b:
                    skipped["identical answers"] += 1
                    continue
                key = (mode_, prompt, frozenset((a, b)))
                group = groups.setdefault(key, {"votes": Counter(), "models": {}, "ids": [], "mode": mode_,
                                                "family": up.get("family"), "prompt": up["prompt"].strip()})
                group["votes"][a] += 1
                group["votes"].setdefault(b, 0)
                group["models"][a], group["models"][b] = up.get("model_a"), down.get("model_a")
                group["ids"].extend([up["id"], down["id"]])
                group["n"] = group.get("n", 0) + 1
    records = []
    for key, group in groups.items():
        (first, n1), (second, n2) = group["votes"].most_common(2)
        total = n1 + n2
        duplicates = group["n"] - 1  # comparisons merged into this record
        if n1 == n2:
            skipped["no majority (votes split evenly)"] += len(group["ids"])
            continue
        agreement = n1 / total
        if agreement < min_agreement:
            skipped[f"agreement {agreement:.2f} < {min_agreement}"] += len(group["ids"])
            continue
        if total < min_votes:
            skipped[f"fewer than {min_votes} votes"] += len(group["ids"])
            continue
        if duplicates:
            skipped["duplicate (same prompt and answers; merged into one record)"] += duplicates
        digest = hashlib.sha256(json.dumps([key[0], key[1], sorted(key[2])]).encode()).hexdigest()[:16]
        records.append({"id": f"pref-{digest}", "prompt": group["prompt"], "chosen": first, "rejected": second,
                        "meta": {"mode": group["mode"], "family": group["family"], "votes": total,
                                 "agreement": round(agreement, 3), "chosen_model": group["models"].get(first),
                                 "rejected_model": group["models"].get(second), "vote_ids": group["ids"]}})
    records.sort(key=lambda r: r["id"])
    report = {"votes_read": len(votes), "votes_considered": considered, "records_written": len(records),
              "skipped": dict(sorted(skipped.items()))}
    return records, report


def export(output: str | Path, *, db: str | Path | None = None, mode: str | None = None, family: str | None = None,
           since: str | None = None, until: str | None = None, min_agreement: float = 0.0,
           min_votes: int = 1, report_path: str | Path | None = None) -> dict:
    votes = read_votes(db or default_db())
    records, report = build_pairs(votes, mode=mode, family=family, since=parse_date(since), until=parse_date(until),
                                  min_agreement=min_agreement, min_votes=min_votes)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out)
    report = {"output": str(out), "db": str(db or default_db()),
              "filters": {"mode": mode, "family": family, "since": since, "until": until,
                          "min_agreement": min_agreement, "min_votes": min_votes}, **report}
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
