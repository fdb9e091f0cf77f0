"""Fast unit tests: coaching figures, engine choice, rules engine, personas, in-character check."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.practice.coaching import TurnIntent, level, session_feedback, summary_figures
from services.practice.engines import RulesEngine, check_in_character, language_of, tidy_reply
from services.practice.keyword_intents import keyword_intent
from services.practice.personas import DEFAULT_PERSONAS_DIR, PersonaError, load_persona, load_personas
from services.practice.policy import ab_engine, choose_engine

PERSONAS = load_personas(DEFAULT_PERSONAS_DIR)


def test_coaching_figures_on_a_scripted_session_match_hand_computed_values():
    labels = ["open_question", "closed_question", "simple_reflection", "complex_reflection", "complex_reflection",
              "advice", "open_question", "simple_reflection", "affirmation", "other"]
    turns = [TurnIntent(i, f"turn {i}", label, "", 0.9) for i, label in enumerate(labels)]
    scores = session_feedback(turns, "procrastination")
    # Q = 2 open + 1 closed = 3, R = 2 simple + 2 complex = 4
    fig = scores["figures"]
    assert scores["questions"] == 3 and scores["reflections"] == 4
    assert fig["reflection_to_question_ratio"]["value"] == pytest.approx(4 / 3, abs=1e-3)
    assert fig["reflection_to_question_ratio"]["level"] == "basic"  # 1.0 <= 1.33 < 2.0
    assert fig["percent_open_questions"]["value"] == pytest.approx(66.7, abs=0.05)
    assert fig["percent_open_questions"]["level"] == "basic"  # 50 <= 66.7 < 70
    assert fig["percent_complex_reflections"]["value"] == 50.0
    assert fig["percent_complex_reflections"]["level"] == "good"  # >= 50
    worst = scores["turn_needing_work"]
    assert worst["index"] == 5 and worst["label"] == "advice"
    assert "procrastination" in worst["suggested_reply"] and worst["suggested_reply"].endswith("?")


def test_figures_are_null_when_not_computable_and_levels_follow_miti_thresholds():
    fig = summary_figures(["advice", "other"])["figures"]
    assert all(f["value"] is None and f["level"] == "not_computable" for f in fig.values())
    assert level("reflection_to_question_ratio", 2.0) == "good"
    assert level("reflection_to_question_ratio", 0.99) == "below_basic"
    assert level("percent_open_questions", 70.0) == "good"
    assert level("percent_complex_reflections", 39.9) == "below_basic"


def test_ab_assignment_is_sticky_and_splits_users():
    engines = {u: ab_engine(u, "salt", 0.5) for u in (f"trainee-{i}" for i in range(200))}
    assert all(ab_engine(u, "salt", 0.5) == e for u, e in engines.items())  # same user, same engine
    share = sum(e == "llm" for e in engines.values()) / len(engines)
    assert 0.35 < share < 0.65
    assert all(ab_engine(u, "salt", 0.0) == "rules" for u in engines)
    assert all(ab_engine(u, "salt", 1.0) == "llm" for u in engines)


def test_runtime_override_beats_the_request_which_beats_the_config():
    kwargs = dict(configured="ab", user_id="u1", salt="s", llm_share=1.0)
    assert choose_engine(runtime_override="rules", requested="llm", **kwargs).engine == "rules"
    assert choose_engine(runtime_override="rules", requested="llm", **kwargs).assignment == "runtime_override"
    assert choose_engine(runtime_override=None, requested="rules", **kwargs).assignment == "request"
    choice = choose_engine(runtime_override=None, requested=None, **kwargs)
    assert (choice.engine, choice.assignment) == ("llm", "ab")
    assert choose_engine(runtime_override=None, requested=None, configured="rules", user_id="u", salt="s",
                         llm_share=1.0).engine == "rules"


@pytest.mark.parametrize("text,label", [
    ("What brings you to the writing centre today?", "open_question"),
    ("Did you start the essay?", "closed_question"),
    ("It sounds like you're worried, but part of you wants to try.", "complex_reflection"),
    ("You should make a schedule.", "advice"),
    ("Well done for coming in.", "affirmation"),
    ("你为什么觉得结构很难？", "open_question"),
    ("听起来你很担心。", "simple_reflection"),
])
def test_keyword_intents(text, label):
    assert keyword_intent(text) == label


def test_at_least_six_personas_with_a_chinese_one_and_every_field():
    assert len(PERSONAS) >= 6
    assert any(p.language == "zh" for p in PERSONAS.values())
    for persona in PERSONAS.values():
        assert persona.name and persona.level and persona.writing_task and persona.problem
        assert persona.will_disclose and persona.will_not_disclose and persona.emotional_state
        assert language_of(persona.opening) == persona.language


def test_a_persona_without_templates_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((DEFAULT_PERSONAS_DIR / "leo-weak-thesis.yaml").read_text().split("replies:")[0])
    with pytest.raises(PersonaError):
        load_persona(bad)


def test_rules_engine_is_deterministic_rewards_open_questions_and_stays_in_character():
    engine, maya = RulesEngine(), PERSONAS["maya-procrastination"]
    conversation = [{"role": "user", "content": "What's been getting in the way?"}]
    first = engine.reply_text(maya, conversation)
    assert first == engine.reply_text(maya, conversation)
    assert maya.will_disclose[0] in first
    conversation += [{"role": "assistant", "content": first}, {"role": "user", "content": "How does that feel?"}]
    assert maya.will_disclose[1] in engine.reply_text(maya, conversation)
    advice = engine.reply_text(maya, [{"role": "user", "content": "You should just make a schedule."}])
    assert not any(d in advice for d in maya.will_disclose)
    for persona in PERSONAS.values():
        for opening in ("Hi, what brings you in today?", "Tell me about your assignment.", "Did you start?"):
            assert check_in_character(persona, engine.reply_text(persona, [{"role": "user", "content": opening}])).ok


def test_in_character_check():
    sam = PERSONAS["sam-plagiarism-worry"]
    assert check_in_character(sam, "I'm scared my paraphrasing is plagiarism.", require_problem=True).ok
    assert "ai_talk" in check_in_character(sam, "As an AI, I cannot feel worried about plagiarism.").problems
    assert "language" in check_in_character(sam, "我很担心抄袭。").problems
    assert "problem_not_mentioned" in check_in_character(sam, "I like biology.", require_problem=True).problems
    assert tidy_reply("Sam: I am worried.\nTutor: why?") == "I am worried."


# --- the llm engine against a scripted upstream (httpx.MockTransport): budget, checks, regeneration ---
import asyncio  # noqa: E402

import httpx  # noqa: E402

from services.practice.engines import LlmEngine, LlmUnavailable  # noqa: E402


def scripted_client(replies: list[str], delay: float = 0.0, status: int = 200, models=("SmolLM2", "peer-v1")):
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": m} for m in models]})
        calls.append(request)
        if delay:
            await asyncio.sleep(delay)
        if status != 200:
            return httpx.Response(status, json={"error": {"code": "upstream_unavailable"}})
        text = replies[min(len(calls) - 1, len(replies) - 1)]
        return httpx.Response(200, json={"model": "peer-v1", "choices": [{"message": {"content": text}}]})

    return httpx.AsyncClient(base_url="http://ai", transport=httpx.MockTransport(handler)), calls


def run_llm(replies, **kwargs):
    delay, status = kwargs.pop("delay", 0.0), kwargs.pop("status", 200)
    models = kwargs.pop("models", ("SmolLM2", "peer-v1"))
    client, calls = scripted_client(replies, delay, status, models)
    engine = LlmEngine(client, "token", **kwargs)
    maya = PERSONAS["maya-procrastination"]

    async def go():
        try:
            return await engine.reply(maya, [{"role": "user", "content": "What brings you in?"}], caller_headers={})
        finally:
            await client.aclose()

    return asyncio.run(go()), calls


def test_llm_engine_returns_an_in_character_reply_with_the_peer_adapter():
    reply, calls = run_llm(["I keep putting it off and the deadline is Friday."])
    assert reply.engine == "llm" and reply.attempts == 1
    sent = calls[0].read().decode()
    assert '"model":"peer"' in sent.replace(" ", "") and "private" in sent


def test_llm_engine_uses_the_base_model_when_no_adapter_is_loaded():
    reply, calls = run_llm(["I keep putting it off."], models=("SmolLM2",))
    assert '"model":""' in calls[0].read().decode().replace(" ", "")


def test_llm_engine_regenerates_once_then_gives_up_out_of_character():
    reply, calls = run_llm(["As an AI, I do not procrastinate.", "I keep putting it off."])
    assert reply.attempts == 2 and len(calls) == 2
    with pytest.raises(LlmUnavailable, match="out_of_character"):
        run_llm(["As an AI language model I can help you.", "Here are some tips for your essay!"])


def test_llm_engine_budget_and_errors_raise_for_the_fallback():
    with pytest.raises(LlmUnavailable, match="time_budget_exceeded"):
        run_llm(["I keep putting it off."], delay=3.0, budget_sec=1.0)
    with pytest.raises(LlmUnavailable, match=r"llm_error \(503"):
        run_llm([""], status=503)
