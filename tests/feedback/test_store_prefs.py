"""The vote store (idempotency) and the preference export (filters, duplicates, agreement, report)."""

import json
import time

import pytest

from common.ab import assign_variant, bucket
from services.feedback.demo import seed_demo
from services.feedback.store import FeedbackStore
from training.prefs import build_pairs, export, parse_date


def vote(store, arena, choice, key="k1", user="u1", when=None, comment=None):
    return store.add_vote({"kind": "arena", "vote": choice, "arena_id": arena["id"], "mode": arena["mode"],
                           "family": arena["family"], "prompt": arena["prompt"], "answer_a": arena["answer_a"],
                           "answer_b": arena["answer_b"], "model_a": arena["model_a"], "model_b": arena["model_b"],
                           "key_id": key, "user_id": user, "created_at": when, "comment": comment,
                           "idempotency_key": f"{key}:arena:{arena['id']}"})


def round_(store, prompt="Is my thesis okay?", a="Good answer", b="Bad answer", mode="peer", family="peer"):
    return store.add_arena(mode=mode, family=family, prompt=prompt, model_a="peer-v1", model_b="base",
                           answer_a=a, answer_b=b, key_id="k1", user_id="u1")


@pytest.fixture
def store(tmp_path):
    s = FeedbackStore(tmp_path / "fb.db")
    yield s
    s.close()


def test_votes_are_idempotent(store):
    arena = round_(store)
    first, created = vote(store, arena, "a")
    again, created_again = vote(store, arena, "b")  # a retry (or a change of mind) does not count twice
    assert created and not created_again
    assert again["id"] == first["id"] and again["vote"] == "a"
    assert store.count() == 1
    assert {k: first[k] for k in ("prompt", "answer_a", "answer_b", "model_a", "model_b", "mode", "key_id",
                                  "user_id")} == {"prompt": arena["prompt"], "answer_a": "Good answer",
                                                  "answer_b": "Bad answer", "model_a": "peer-v1", "model_b": "base",
                                                  "mode": "peer", "key_id": "k1", "user_id": "u1"}
    assert first["created_at"] > 0


def test_store_reopens_with_votes(tmp_path):
    s = FeedbackStore(tmp_path / "fb.db")
    vote(s, round_(s), "a")
    s.close()
    assert FeedbackStore(tmp_path / "fb.db").count() == 1


def test_export_direction_ties_and_thumbs(store):
    vote(store, round_(store, prompt="p1"), "a")
    vote(store, round_(store, prompt="p2"), "b")
    vote(store, round_(store, prompt="p3"), "tie")
    vote(store, round_(store, prompt="p4"), "both_bad")
    vote(store, round_(store, prompt="p5", a="same", b="same"), "a")
    for rid, choice, answer in (("r1", "up", "Kind answer"), ("r2", "down", "Rude answer"), ("r3", "up", "Lonely")):
        store.add_vote({"kind": "thumbs", "vote": choice, "response_id": rid, "mode": "peer", "family": "peer",
                        "prompt": "p6" if rid != "r3" else "p7", "answer_a": answer, "key_id": "k1",
                        "idempotency_key": f"k1:thumbs:{rid}"})
    records, report = build_pairs(store.votes())
    by_prompt = {r["prompt"]: r for r in records}
    assert (by_prompt["p1"]["chosen"], by_prompt["p1"]["rejected"]) == ("Good answer", "Bad answer")
    assert (by_prompt["p2"]["chosen"], by_prompt["p2"]["rejected"]) == ("Bad answer", "Good answer")
    assert (by_prompt["p6"]["chosen"], by_prompt["p6"]["rejected"]) == ("Kind answer", "Rude answer")
    assert set(by_prompt) == {"p1", "p2", "p6"}
    assert report["skipped"] == {"identical answers": 1, "no preference (both_bad)": 1, "no preference (tie)": 1,
                                 "thumbs without an opposite vote on the same prompt": 1}
    assert report["records_written"] == 3 and report["votes_read"] == 8


def test_export_duplicates_agreement_and_filters(store, tmp_path):
    # the same prompt and answers voted by five keys: 4 prefer "Good", 1 prefers "Bad" -> one record, agreement 0.8
    for i, choice in enumerate("aaaab"):
        vote(store, round_(store, prompt="dup"), choice, key=f"k{i}")
    # a contested comparison: 2 vs 1 (agreement 0.67)
    for i, choice in enumerate("aab"):
        vote(store, round_(store, prompt="contested", a="X", b="Y"), choice, key=f"c{i}")
    vote(store, round_(store, prompt="other mode", mode="tutor", family="tutor"), "a")
    old = round_(store, prompt="old one")
    vote(store, old, "a", when=parse_date("2020-01-01"))

    records, report = build_pairs(store.votes(), family="peer", min_agreement=0.7)
    assert [r["prompt"] for r in records] == ["dup"] or {r["prompt"] for r in records} == {"dup", "old one"}
    assert {r["prompt"] for r in records} == {"dup", "old one"}
    dup = next(r for r in records if r["prompt"] == "dup")
    assert dup["chosen"] == "Good answer" and dup["meta"]["votes"] == 5 and dup["meta"]["agreement"] == 0.8
    assert report["skipped"]["duplicate (same prompt and answers; merged into one record)"] == 4
    assert report["skipped"]["agreement 0.67 < 0.7"] == 3
    assert report["skipped"]["filtered: family"] == 1

    records, report = build_pairs(store.votes(), mode="peer", since=parse_date("2024-01-01"))
    assert {r["prompt"] for r in records} == {"dup", "contested"}
    assert report["skipped"]["filtered: before --since"] == 1 and report["skipped"]["filtered: mode"] == 1

    out = tmp_path / "prefs.jsonl"
    summary = export(out, db=store.path, mode="peer", since="2024-01-01", min_agreement=0.7,
                     report_path=tmp_path / "r.json")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary["records_written"] == 1
    assert all(lines[0][k] for k in ("prompt", "chosen", "rejected"))
    assert json.loads((tmp_path / "r.json").read_text())["filters"]["min_agreement"] == 0.7


def test_export_reads_as_dpo_data(store, tmp_path):
    from training.train import preference_rows

    seed_demo(store, rounds=20, seed=3)
    out = tmp_path / "prefs.jsonl"
    summary = export(out, db=store.path, family="peer")
    rows = preference_rows([str(out)])  # what `training dpo` reads
    assert len(rows) == summary["records_written"] > 10
    assert rows[0]["chosen"][0]["role"] == "assistant"


def test_demo_prefers_the_coach_style(store):
    counts = seed_demo(store, rounds=50, consistency=0.9, seed=1)
    records, _ = build_pairs(store.votes())
    coach = sum(r["chosen"].startswith("Coach tip:") for r in records)
    assert counts["rounds"] == 50 and 0.75 < coach / len(records) < 1.0


def test_ab_assignment_is_sticky_and_proportional():
    assert all(assign_variant("peer", "alice", 30) == assign_variant("peer", "alice", 30) for _ in range(5))
    share = sum(assign_variant("peer", f"user-{i}", 10) == "candidate" for i in range(5000)) / 5000
    assert 0.08 < share < 0.12
    assert assign_variant("peer", "bob", 0) == "control" and assign_variant("peer", "bob", 100) == "candidate"
    assert 0 <= bucket("peer", "x") < 100
