"""Demo mode: simulated students' preferences, so the whole loop can be walked through in minutes.

`python -m services.feedback seed-demo --rounds 40` writes arena rounds and votes into the store
(FEEDBACK_DB_PATH). Each round: a writing-help prompt and two answers, one in the *coach* style
(opens with "Coach tip:", one concrete suggestion, ends by asking the writer a question) and one
in a flat *verdict* style; the simulated student picks the coach answer with probability
`--consistency` (default 0.9), so the export sees realistic, not unanimous, agreement.
Prompts, sentences and the seed are varied, so the preference is about the style, not a string.
"""

from __future__ import annotations

import random

from services.feedback.store import FeedbackStore

TOPICS = ["my thesis", "this opening line", "my conclusion", "this paragraph", "my topic sentence",
          "the transition here", "my evidence", "this counterargument", "my title", "the second paragraph",
          "this quotation", "my essay's structure", "this sentence", "my introduction", "the ending"]
TEXTS = ["'Homework is bad.'", "'Since the dawn of time, people have used phones.'", "'In conclusion, that is all.'",
         "'Social media is good and bad.'", "'There are many reasons why school uniforms matter.'",
         "'Climate change is a big problem for everyone.'", "'Dogs are better than cats.'",
         "'This essay will talk about technology.'", "'Reading is important.'", "'Sports teach teamwork.'",
         "'Cities should ban cars.'", "'Exams do not measure learning.'", "'Music helps people study.'"]
ASKS = ["What do you think of {topic}: {text}", "Can you check {topic}? {text}", "Is {topic} okay? {text}",
        "Any feedback on {topic}? {text}", "How can I improve {topic}? {text}"]
SUGGESTIONS = ["name one specific example", "make the claim arguable", "cut the filler words",
               "add a concrete detail", "state your reason in the same sentence", "replace the cliché with a scene",
               "say why it matters to your reader", "link it back to your thesis"]
QUESTIONS = ["Which example from your own experience could you use?", "What is the strongest reason you have?",
             "What would someone who disagrees say?", "Which detail would make this vivid for you?",
             "What do you want your reader to remember?"]
VERDICTS = ["This is not good enough.", "It needs work.", "This is weak.", "Fix this.", "The sentence is vague.",
            "It is too general.", "This does not work."]


def coach_answer(rng: random.Random) -> str:
    return f"Coach tip: {rng.choice(SUGGESTIONS).capitalize()}. {rng.choice(QUESTIONS)}"


def verdict_answer(rng: random.Random) -> str:
    return f"{rng.choice(VERDICTS)} {rng.choice(SUGGESTIONS).capitalize()}."


def demo_prompt(rng: random.Random) -> str:
    return rng.choice(ASKS).format(topic=rng.choice(TOPICS), text=rng.choice(TEXTS))


def seed_demo(store: FeedbackStore, *, rounds: int = 40, mode: str = "peer", family: str | None = None,
              control: str = "peer-v1", candidate: str = "base", consistency: float = 0.9, seed: int = 0,
              key_id: str = "demo", user_prefix: str = "demo-student") -> dict:
    rng = random.Random(seed)
    counts = {"rounds": 0, "coach_preferred": 0, "verdict_preferred": 0}
    for i in range(rounds):
        coach, verdict = coach_answer(rng), verdict_answer(rng)
        coach_first = rng.random() < 0.5
        answer_a, answer_b = (coach, verdict) if coach_first else (verdict, coach)
        model_a, model_b = (control, candidate) if rng.random() < 0.5 else (candidate, control)
        user = f"{user_prefix}-{i % 7}"
        row = store.add_arena(mode=mode, family=family or mode, prompt=demo_prompt(rng), model_a=model_a,
                              model_b=model_b, answer_a=answer_a, answer_b=answer_b, key_id=key_id, user_id=user)
        prefers_coach = rng.random() < consistency
        vote = "a" if prefers_coach == coach_first else "b"
        store.add_vote({"kind": "arena", "vote": vote, "arena_id": row["id"], "mode": mode, "family": family or mode,
                        "prompt": row["prompt"], "answer_a": answer_a, "answer_b": answer_b, "model_a": model_a,
                        "model_b": model_b, "key_id": key_id, "user_id": user,
                        "idempotency_key": f"{key_id}:arena:{row['id']}", "comment": None})
        counts["rounds"] += 1
        counts["coach_preferred" if prefers_coach else "verdict_preferred"] += 1
    return counts
