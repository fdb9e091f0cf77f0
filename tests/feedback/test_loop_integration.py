"""The loop end to end on CPU with the embedded model and the session's real vLLM:
scripted arena votes for answers in the *coach* style -> `training loop` (export -> DPO from peer-v1 ->
evaluate -> publish peer-vN -> A/B at 10%) -> the new version prefers that style more than the old one
on held-out prompts, the split is live in the gateway's responses, and rollback ends it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from services.feedback.demo import seed_demo
from services.feedback.store import FeedbackStore
from tests.support.stack import LLM_SERVER_TOKEN
from training.loop import run_loop

pytestmark = pytest.mark.integration
RESULTS = Path("bench/results/feedback_loop.md")


def admin(stack):
    return {"authorization": f"Bearer {stack.key_for('loop-admin', role='admin', user_id='ops')}"}


def test_loop_round_trip(stack, feedback, base_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_SERVER_API_TOKEN", LLM_SERVER_TOKEN)
    store = FeedbackStore(feedback.db_path)  # scripted votes, as students in the arena would cast them
    seed_demo(store, rounds=40, consistency=0.9, seed=11, key_id="scripted")
    store.close()
    report = run_loop("peer", db=feedback.db_path, out_dir=str(tmp_path / "loop"), base_model=base_model,
                      max_steps=8, learning_rate=2e-3, max_length=96, batch_size=4, min_pairs=8, holdout=0.3,
                      regression_limit=4, max_ppl_increase=0.5, adapters_dir=str(stack.adapters_dir),
                      control_url=stack.control_url, ab_percent=10, feedback_url=feedback.url,
                      feedback_token=feedback.token,
                      # the gate runs for real on a small sample; a wide tolerance, since 24 prompts cannot
                      # tell two near-identical adapters apart (tests/training covers the refusal itself)
                      safety_sample=24, safety_max_tokens=32, safety_tolerance=0.25)
    assert report["status"] == "done", json.dumps(report, indent=2, default=str)
    gate = report["steps"]["safety"]
    assert gate["passed"] and gate["old"]["unsafe_rate"] is not None and gate["new"]["unsafe_rate"] is not None
    evaluation = report["steps"]["evaluate"]
    old, new = evaluation["old"]["preference"], evaluation["new"]["preference"]
    assert evaluation["preference_set"] == "holdout" and new["pairs"] >= 5
    assert new["mean_margin"] > old["mean_margin"] + 0.05, evaluation
    assert new["accuracy"] >= old["accuracy"], evaluation
    name = report["steps"]["publish"]["name"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Feedback loop on CPU (SmolLM2-135M, tiny DPO)\n\n"
        f"{report['steps']['export']['train_pairs']} training pairs from {report['steps']['export']['votes_read']} "
        f"scripted votes (90% for the coach style); {new['pairs']} held-out pairs; "
        f"{report['steps']['dpo']['metrics']['global_step']} DPO steps; loop {report['elapsed_s']} s on "
        f"{os.cpu_count()} CPU cores (load average at the end {os.getloadavg()[0]:.1f}).\n\n"
        "| version | held-out preference accuracy | mean log-prob margin (chosen - rejected) | regression ppl |\n"
        "|---|---|---|---|\n"
        f"| {evaluation['old']['adapter']} | {old['accuracy']:.2f} | {old['mean_margin']:+.3f} | "
        f"{evaluation['old']['regression']['perplexity']:.2f} |\n"
        f"| {name} | {new['accuracy']:.2f} | {new['mean_margin']:+.3f} | "
        f"{evaluation['new']['regression']['perplexity']:.2f} |\n", encoding="utf-8")

    split = httpx.get(f"{stack.gateway_url}/v1/ab/peer", headers=admin(stack), timeout=30).json()
    assert split["active"] and split["candidate"] == name and split["control"] == "peer-v1" and split["percent"] == 10
    try:
        # sticky per user: ask as several users; each answer says which arm served it
        seen = {}
        deadline = time.monotonic() + 20  # ai_service caches the model list a few seconds
        for i in range(12):
            key = stack.key_for(f"ab-user-{i}", user_id=f"ab-user-{i}")
            r = httpx.post(f"{stack.gateway_url}/v1/chat", headers={"authorization": f"Bearer {key}"}, timeout=120,
                           json={"mode": "peer", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
            assert r.status_code == 200, r.text
            if "x-tutorstack-ab-variant" in r.headers:
                seen[i] = (r.headers["x-tutorstack-ab-variant"], r.headers["x-tutorstack-adapter"])
            elif time.monotonic() > deadline:
                pytest.fail("no x-tutorstack-ab-variant header: ai_service does not honour the split yet")
        for variant, adapter in seen.values():
            assert adapter == (name if variant == "candidate" else "peer-v1")
    finally:
        rolled = httpx.post(f"{stack.gateway_url}/v1/ab/peer/rollback", headers=admin(stack), timeout=60)
    assert rolled.status_code == 200 and rolled.json()["removed"] == name
    assert not (stack.adapters_dir / name).exists()
