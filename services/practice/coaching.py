"""Coaching feedback: per-turn tips and MITI-style session figures. Pure functions, no FastAPI.

Summary figures and thresholds (MITI 3.1.1, Moyers et al. 2010: "beginning proficiency" = basic,
"competency" = good):
  reflection-to-question ratio R:Q   basic >= 1.0   good >= 2.0
  percent open questions  %OQ        basic >= 50%   good >= 70%
  percent complex reflections %CR    basic >= 40%   good >= 50%
R = simple + complex reflections, Q = open + closed questions; %OQ = open / Q; %CR = complex / R.
A figure whose denominator is zero is null (not computable yet), never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLDS = {
    "reflection_to_question_ratio": {"basic": 1.0, "good": 2.0},
    "percent_open_questions": {"basic": 50.0, "good": 70.0},
    "percent_complex_reflections": {"basic": 40.0, "good": 50.0},
}

# How much a turn needs work (higher = more). Advice and closed questions cost the most in MI practice.
NEED = {"advice": 3.0, "closed_question": 2.0, "giving_information": 1.5, "other": 1.0, "simple_reflection": 0.5,
        "affirmation": 0.3, "open_question": 0.2, "complex_reflection": 0.0}

TIPS_EN = {
    "open_question": "Open question: it invites the student to explore. Follow their answer with a reflection.",
    "closed_question": "Closed question: it gets a yes/no. Try an open one (what, how, tell me about...).",
    "simple_reflection": "Simple reflection: good listening. Try going one step further: the feeling or meaning "
                         "behind what they said (a complex reflection).",
    "complex_reflection": "Complex reflection: you named the meaning behind their words. Well done.",
    "giving_information": "Giving information: fine when asked. Check what they already know first, and ask what "
                          "they make of it afterwards.",
    "advice": "Advice: ask permission first and draw out their own ideas before offering yours.",
    "affirmation": "Affirmation: you recognised an effort or strength. Keep it specific and genuine.",
    "other": "This turn was neither a question nor a reflection. Try reflecting what the student just said.",
}
TIPS_ZH = {
    "open_question": "开放式提问：鼓励对方多说。接着可以用一个反映来回应。",
    "closed_question": "封闭式提问：只能得到是/否。试试开放式提问（什么、怎么、说说……）。",
    "simple_reflection": "简单反映：说明你在听。再进一步，说出对方话语背后的感受或意义（复杂反映）。",
    "complex_reflection": "复杂反映：你说出了对方话语背后的意义，很好。",
    "giving_information": "提供信息：在对方需要时可以。先问对方已经知道什么，之后问对方怎么看。",
    "advice": "给建议：先征得同意，并先引导对方说出自己的想法。",
    "affirmation": "肯定：你认可了对方的努力或优点。要具体、真诚。",
    "other": "这一句既不是提问也不是反映。试着反映对方刚才说的话。",
}


@dataclass
class TurnIntent:
    index: int  # position of the trainee's turn (0-based among trainee turns)
    text: str
    label: str
    main: str
    confidence: float
    previous: str | None = None  # the persona's line before it


def tip(label: str, language: str = "en") -> str:
    return (TIPS_ZH if language == "zh" else TIPS_EN)[label]


def level(name: str, value: float | None) -> str:
    """'good', 'basic', 'below_basic' or 'not_computable'."""
    if value is None:
        return "not_computable"
    thresholds = THRESHOLDS[name]
    if value >= thresholds["good"]:
        return "good"
    if value >= thresholds["basic"]:
        return "basic"
    return "below_basic"


def summary_figures(labels: list[str]) -> dict:
    counts = {label: labels.count(label) for label in NEED}
    questions = counts["open_question"] + counts["closed_question"]
    reflections = counts["simple_reflection"] + counts["complex_reflection"]
    values = {
        "reflection_to_question_ratio": round(reflections / questions, 3) if questions else None,
        "percent_open_questions": round(100.0 * counts["open_question"] / questions, 1) if questions else None,
        "percent_complex_reflections": round(100.0 * counts["complex_reflection"] / reflections, 1)
        if reflections else None,
    }
    figures = {name: {"value": value, "level": level(name, value), "basic": THRESHOLDS[name]["basic"],
                      "good": THRESHOLDS[name]["good"]} for name, value in values.items()}
    return {"counts": counts, "questions": questions, "reflections": reflections, "figures": figures}


def suggested_reply(turn: TurnIntent, persona_problem: str, language: str) -> str:
    """A better reply for a turn: a complex reflection of the persona's situation plus an open question."""
    if language == "zh":
        return f"听起来{persona_problem}让你压力很大，你也很想把它做好。对你来说，现在最难的部分是什么？"
    return (f"It sounds like {persona_problem} is weighing on you, and part of you really wants to get this right. "
            f"What feels hardest about it right now?")


def turn_needing_work(turns: list[TurnIntent]) -> TurnIntent | None:
    """The trainee turn with the highest need score (the latest among ties); None if every turn was a
    complex reflection or an open question... then nothing stands out."""
    if not turns:
        return None
    worst = max(turns, key=lambda t: (NEED[t.label], t.index))
    return worst if NEED[worst.label] >= 0.5 else None


def session_feedback(turns: list[TurnIntent], persona_problem: str, language: str = "en") -> dict:
    figures = summary_figures([t.label for t in turns])
    worst = turn_needing_work(turns)
    figures["turns"] = len(turns)
    figures["turn_needing_work"] = None if worst is None else {
        "index": worst.index, "text": worst.text, "label": worst.label, "tip": tip(worst.label, language),
        "suggested_reply": suggested_reply(worst, persona_problem, language)}
    return figures


def turn_feedback(turn: TurnIntent, language: str = "en") -> dict:
    return {"index": turn.index, "label": turn.label, "main": turn.main, "confidence": round(turn.confidence, 3),
            "tip": tip(turn.label, language), "needs_work": NEED[turn.label] >= 1.5}
