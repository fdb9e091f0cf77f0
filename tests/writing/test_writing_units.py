"""Unit tests: metrics on hand-checked texts, scorer training/loading, validation, LLM output checks, profile merge."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from common.errors import OpenAIError
from services.writing import metrics as M
from services.writing.analysis import analyse_request, parse_request, span_fields
from services.writing.llm import locate, validate
from services.writing.schemas import AnalyzeRequest, AnalyzeResponse
from services.writing.scorer import FEATURES, AssignmentStats, Scorer, prior_sd, to_scale
from services.writing.store import merge
from services.writing.train_scorer import main as train_main
from services.writing.train_scorer import CALIBRATION, CLASS_SIZE, class_rows, qwk, running_stats, sd_law
from tests.writing.samples import CHINESE, ENGLISH, TRICKY

DATA = Path("../shared/data/asap_aes")


def test_english_counts_hand_checked():
    text = "I like dogs. They are loyal, kind and fun!\n\nCats are fine too. Do you agree?"
    a = M.analyse(text)
    m = a.metrics
    assert (m["language"], m["words"], m["sentences"], m["paragraphs"]) == ("en", 16, 4, 2)
    assert m["sentence_length"]["mean"] == 4.0  # 3, 6, 4, 3 words
    assert m["sentence_length"]["stdev"] == round(float(np.std([3, 6, 4, 3])), 2)
    assert m["lexical_diversity"]["unique_words"] == 15  # "are" twice
    assert m["spelling"]["errors"] == 0 and m["grammar"]["errors"] == 0


def test_english_issues_and_transitions():
    text = "However, i has a apple. The the cat is recieving food.It sleeps."
    a = M.analyse(text)
    quotes = {(i.type, text[i.start:i.end]) for i in a.issues}
    assert ("grammar", "i") in quotes and ("grammar", "a apple") in quotes and ("grammar", "The the") in quotes
    assert ("spelling", "recieving") in quotes and ("punctuation", "food.") in quotes
    fix = next(i for i in a.issues if text[i.start:i.end] == "recieving").suggestion
    assert "receiving" in fix
    assert a.metrics["transitions"]["used"][0]["term"] == "however"


def test_mtld_and_readability_reference_values():
    assert M.mtld(["a", "b", "a", "b"] * 25) < M.mtld([f"w{i}" for i in range(100)])
    assert M.syllables("banana") == 3 and M.syllables("cat") == 1
    a = M.analyse("The cat sat on the mat.")
    assert a.metrics["readability"]["flesch_reading_ease"] > 100  # one-syllable words, short sentence


def test_chinese_counts_hand_checked():
    text = "我喜欢读书。读书让我快乐！你呢？\n\n总之，读书很好。"
    a = M.analyse(text)
    m = a.metrics
    assert m["language"] == "zh" and m["unit"] == "characters"
    assert m["characters"] == 19 and m["sentences"] == 4 and m["paragraphs"] == 2
    assert m["words"] >= 10 and m["transitions"]["used"][0]["term"] == "总之"
    assert m["sentence_length"]["mean"] == round((5 + 5 + 2 + 7) / 4, 2)


def test_chinese_is_not_a_zero_word_english_text():
    a = M.analyse(CHINESE)
    assert a.language == "zh" and a.metrics["words"] > 40 and a.metrics["characters"] > 80
    assert any(i.type == "punctuation" and CHINESE[i.start:i.end] == "," for i in a.issues)


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, TRICKY])
def test_every_span_is_exact(text):
    request = AnalyzeRequest(writing_type="essay", content=text)
    det = analyse_request(request, Scorer())
    for issue in det.issues:
        assert text[issue.start:issue.end] == issue.as_dict(text)["quote"]
    for score in det.scores:
        for ev in score["evidence"]:
            assert text[ev["span"][0]:ev["span"][1]] == ev["quote"]


def test_utf16_spans_after_emoji():
    text = "😀 ab"
    assert span_fields(text, 2, 4) == {"span": [2, 4], "span_utf16": [3, 5], "quote": "ab"}


def test_validation_errors():
    ok = dict(max_body_bytes=10_000, max_chars=1000)
    with pytest.raises(OpenAIError) as e:
        parse_request(b'{"writing_type":"essay","content":"  \\n "}', **ok)
    assert e.value.status == 400
    with pytest.raises(OpenAIError) as e:
        parse_request(('{"writing_type":"essay","content":"' + "a" * 2000 + '"}').encode(), **ok)
    assert e.value.status == 413
    with pytest.raises(OpenAIError) as e:
        parse_request(b'{"writing_type":"essay","content":"\xff\xfe"}', **ok)
    assert e.value.status == 400
    with pytest.raises(OpenAIError) as e:
        parse_request(b'{"writing_type":"haiku","content":"text"}', **ok)
    assert e.value.status == 400 and "literature_review" in str(e.value)
    with pytest.raises(OpenAIError) as e:
        parse_request(b'{"writing_type":"essay","content":"t","rubric":{"criteria":[{"id":"a"},{"id":"a"}]}}', **ok)
    assert e.value.status == 422 and "unique" in str(e.value)
    assert parse_request(b'{"writing_type":"summary","content":"fine text"}', **ok).writing_type == "summary"


def test_llm_quotes_are_relocated_or_dropped():
    content = "The results were  Significant in the second trial."
    assert locate(content, "results were") == (4, 16)
    assert locate(content, "results were significant") == (4, 29)  # case and whitespace repaired
    assert locate(content, "a sentence that is not there") is None
    issues, dropped = validate(content, {"issues": [
        {"quote": "the second trial", "type": "evidence", "suggestion": "Say how many people took part."},
        {"quote": "invented words", "type": "style", "suggestion": "This quote does not exist."}]}, "en")
    assert dropped == 1 and len(issues) == 1 and content[issues[0].start:issues[0].end] == "second trial" or \
        content[issues[0].start:issues[0].end] == "the second trial"


def test_profile_merge():
    weak = [{"criterion": "ideas", "skill": "thesis", "normalized": 0.2}]
    p = merge({}, "u1", "default", weak, {"ideas": 0.2, "style": 0.8}, {"at": "2026-01-01T00:00:00Z"})
    p = merge(p, "u1", "default", weak, {"ideas": 0.2}, {"at": "2026-01-02T00:00:00Z"})
    assert p["weak_points"][0]["count"] == 2 and p["weak_points"][0]["first_seen"] == "2026-01-01T00:00:00Z"
    p = merge(p, "u1", "default", [], {"ideas": 0.9}, {"at": "2026-01-03T00:00:00Z"})
    assert p["weak_points"][0]["resolved"] is True and len(p["history"]) == 3


def test_qwk_and_scale_mapping():
    assert qwk([0, 1, 2, 3], [0, 1, 2, 3], 0, 3) == pytest.approx(1.0)
    assert qwk([0, 0, 3, 3], [3, 3, 0, 0], 0, 3) < 0
    assert to_scale(0.5, 1, 6) == 4.0 and to_scale(1.3, 0, 10, 0.5) == 10.0 and to_scale(0.33, 0, 10, 0.5) == 3.5


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/asap_aes")
def test_scorer_trains_and_loads(tmp_path):
    out = tmp_path / "scorer.pkl"
    assert train_main(["--data", str(DATA), "--out", str(out), "--limit", "40", "--no-eval",
                       "--recipe", "classes-wide"]) == 0
    scorer = Scorer(out)
    assert scorer.info["recipe"] == "classes-wide" and scorer.bundle["sd_law"]["inflate_var"] > 0
    good, poor = ENGLISH, "computers is bad. i dont like."
    a, b = scorer.predict(good), scorer.predict(poor)
    assert 0 <= b.holistic < a.holistic <= 1
    assert set(a.traits) == {"ideas", "organization", "voice", "word_choice", "fluency", "conventions"}
    bundle = pickle.loads(out.read_bytes())
    bundle["features"] = ["other"]
    out.write_bytes(pickle.dumps(bundle))
    with pytest.raises(ValueError):
        Scorer(out)


def test_shipped_scorer_orders_quality():
    scorer = Scorer()
    assert len(scorer.info["features"]) == len(FEATURES)
    assert scorer.predict(ENGLISH).holistic > scorer.predict("computers is bad. i dont like it.").holistic


def _cohort(scorer: Scorer, texts: list[str]) -> AssignmentStats:
    stats = AssignmentStats()
    for text in texts:
        stats.add(scorer.features(text))
    return stats


SENTENCES = [s.strip() + "." for s in ENGLISH.replace("\n", " ").split(".") if s.strip()]


def test_assignment_calibration_is_relative_to_the_cohort():
    """The same essay scores higher among short, weak essays of its assignment than among long, strong ones; with
    fewer than min_essays earlier essays (or none) the prompt-free cold-start model decides alone."""
    scorer = Scorer()
    essay = " ".join(SENTENCES[:6])
    weak = [" ".join(SENTENCES[i:i + 1 + i % 2]).lower().replace(",", "") for i in range(12)]
    strong = [" ".join(SENTENCES * (1 + i % 3))[: 900 + 150 * i] + "." for i in range(12)]
    cold = scorer.predict(essay)
    assert cold.calibration == "absolute" and cold.essays_seen == 0 and cold.holistic == pytest.approx(cold.absolute)
    few = scorer.predict(essay, stats=_cohort(scorer, weak[: scorer.min_essays - 1]), points=5)
    assert few.calibration == "absolute" and few.holistic == pytest.approx(cold.holistic)
    among_weak = scorer.predict(essay, stats=_cohort(scorer, weak), points=5)
    among_strong = scorer.predict(essay, stats=_cohort(scorer, strong), points=5)
    assert among_weak.calibration == among_strong.calibration == "assignment"
    assert among_weak.essays_seen == 12
    assert among_weak.holistic > cold.absolute > among_strong.holistic
    assert all(0 <= v <= 1 for v in among_strong.traits.values())


def test_running_stats_match_incremental_stats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, len(FEATURES)))
    n, mean, std = running_stats(x)
    stats = AssignmentStats()
    for i in range(len(x)):
        assert n[i] == stats.n
        if i:
            assert np.allclose(mean[i], stats.mean) and np.allclose(std[i], stats.std)
        stats.add(x[i])


def test_spread_law_clip_and_inflation():
    """The spread for a new scale: the law clipped to the training prompts' range ("range") or a wider one
    ("wide"), widened by the variance of the training prompts' means (the unknown mean of a new assignment)."""
    prompts = np.repeat([1, 3, 8], 50)  # 10, 3 and 60 scale steps
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0.65, 0.15, 50), rng.normal(0.45, 0.30, 50), rng.normal(0.60, 0.10, 50)])
    narrow, wide = sd_law(y, prompts, "range", 0.0), sd_law(y, prompts, "wide", 1.0)
    sds = [y[prompts == p].std() for p in (1, 3, 8)]
    means = [y[prompts == p].mean() for p in (1, 3, 8)]
    assert narrow["inflate_var"] == 0 and wide["inflate_var"] == pytest.approx(np.var(means))
    assert prior_sd(narrow, 1000) == pytest.approx(min(sds)) and prior_sd(narrow, 1) == pytest.approx(max(sds))
    assert prior_sd(wide, 1000) == pytest.approx(np.sqrt((0.5 * min(sds)) ** 2 + np.var(means)))
    for steps in (3, 5, 10, 60):
        assert prior_sd(wide, steps) ** 2 == pytest.approx(prior_sd({**wide, "inflate_var": 0.0}, steps) ** 2
                                                            + np.var(means))
    assert prior_sd(narrow, None) == pytest.approx(np.mean(sds))


def test_class_rows_use_only_earlier_essays_of_each_class():
    """Training rows for the class-sized recipe: each essay standardised with the running statistics of the essays
    before it in its class of CLASS_SIZE (from min_essays on), the target its z-score within the whole prompt."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2 * CLASS_SIZE + 7, 3))
    y = rng.uniform(size=len(x))
    groups = np.zeros(len(x), dtype=int)
    prior_var = np.ones(3)
    cx, cz, cy = class_rows(x, y, groups, prior_var, seed=3)
    classes = [CLASS_SIZE, CLASS_SIZE, 7]
    assert len(cx) == sum(c - CALIBRATION["min_essays"] for c in classes)
    order = np.random.default_rng(3).permutation(len(x))
    first = x[order[:CLASS_SIZE]]
    i = CALIBRATION["min_essays"]
    n, mean, std = running_stats(first)
    var = (n[i] * std[i] ** 2 + CALIBRATION["var_k"] * prior_var) / (n[i] + CALIBRATION["var_k"])
    assert np.allclose(cx[0], first[i]) and np.allclose(cz[0], np.clip((first[i] - mean[i]) / np.sqrt(var), -5, 5))
    assert cy[0] == pytest.approx((y[order[i]] - y.mean()) / y.std())


def test_response_schema_is_published():
    schema = AnalyzeResponse.model_json_schema()
    assert {"scores", "overall", "issues", "metrics", "feedback", "model", "degraded"} <= set(schema["required"])


def test_truncated_llm_json_is_closed():
    from services.writing.llm import loads_lenient

    assert loads_lenient('{"issues": [{"quote": "a \\"b') == {"issues": [{"quote": 'a "b'}]}
    with pytest.raises(ValueError):
        loads_lenient("not json at all")


def _reviewer(replies: list):
    import asyncio

    import httpx

    from services.writing.llm import LlmReviewer

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        reply = replies[min(len(calls) - 1, len(replies) - 1)]
        if isinstance(reply, int):
            return httpx.Response(reply, json={"error": {"message": "x"}})
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": reply}}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://ai")
    reviewer = LlmReviewer(client, budget_sec=5, max_tokens=64, attempts=2)
    run = lambda: asyncio.run(reviewer.review(ENGLISH, writing_type="essay", lang="en", weakest=["ideas"],
                                              assignment=None, headers={}))
    return run, calls


def test_llm_retried_once_then_fails():
    from services.writing.llm import LlmFailed

    good = '{"issues": [{"quote": "homework should be banned", "type": "content", "suggestion": "Say who wants it banned."}]}'
    run, calls = _reviewer(["{not json", good])
    result = run()
    assert len(calls) == 2 and result.attempts == 2 and result.model == "m"
    issue = result.issues[0]
    assert ENGLISH[issue.start:issue.end] == "homework should be banned" and issue.source == "llm"
    body = calls[0].read().decode()
    assert '"json_schema"' in body and '"max_tokens":64' in body
    assert calls[0].headers["x-data-classification"] == "private"
    run, calls = _reviewer([500, "[]"])
    with pytest.raises(LlmFailed):
        run()
    assert len(calls) == 2
