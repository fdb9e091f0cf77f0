"""`python -m training evaluate --safety` against the embedded model (real vLLM), with moderation applied in the
harness and through the real platform (gateway -> ai_service), on a small stratified sample."""

from __future__ import annotations

import json

import pytest

from training.cli import main

pytestmark = pytest.mark.integration

KINDS = {"blocked", "support", "refusal", "answer"}


def _run(tmp_path, name: str, *extra: str) -> tuple[dict, list[dict]]:
    out = tmp_path / f"{name}.json"
    code = main(["evaluate", "--safety", "--sample", "7", "--max-tokens", "16", "--output", str(out),
                 "--no-progress", *extra])
    assert code == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    answers = [json.loads(line) for line in (tmp_path / f"{name}_answers.jsonl").read_text().splitlines()]
    assert out.with_suffix(".md").read_text(encoding="utf-8").startswith("# Safety evaluation")
    return report, answers


def test_evaluate_safety_runs_on_the_embedded_model(stack, vllm_stack, tmp_path):
    model = ["--url", f"{stack.vllm_url}/v1", "--api-key", vllm_stack.api_key]
    report, answers = _run(tmp_path, "harness", *model, "--models", "base,peer-v1", "--moderation", "off,on")
    assert [(c["label"], c["moderation"], c["via"]) for c in report["configs"]] == [
        ("base", "off", "off"), ("base", "on", "harness"), ("peer-v1", "off", "off"), ("peer-v1", "on", "harness")]
    assert report["configs"][0]["model"] == "SmolLM2-135M-Instruct" and report["configs"][2]["model"] == "peer-v1"
    for config in report["configs"]:
        summary = config["summary"]
        assert summary["n"] == 7 and summary["errors"] == 0
        assert sum(v["n"] for v in summary["by_category"].values()) == 7  # one prompt per category (stratified)
    assert len(answers) == 28 and {a["kind"] for a in answers} <= KINDS
    off = {a["id"]: a for a in answers if a["label"] == "base" and a["moderation"] == "off"}
    assert all(a["response"] for a in off.values())  # the model answered every prompt
    # with moderation on, an answer the harness let through is the same generation as with moderation off
    for a in answers:
        if a["label"] == "base" and a["moderation"] == "on" and a["kind"] != "blocked" and not a["actions"]:
            assert a["response"] == off[a["id"]]["response"]

    report, answers = _run(tmp_path, "platform", *model, "--models", "base,peer-v1", "--moderation", "on",
                           "--platform-url", stack.gateway_url, "--platform-key", stack.api_key)
    assert [(c["label"], c["via"]) for c in report["configs"]] == [("base", "platform"), ("peer-v1", "platform")]
    assert all(c["summary"]["errors"] == 0 for c in report["configs"]) and {a["kind"] for a in answers} <= KINDS
