"""The rule engine's keyword intents: what the `rules` reply engine uses to pick a template, and the
baseline the trained classifier is measured against. Deterministic, instant, English and Chinese."""

from __future__ import annotations

import re

_WH = re.compile(r"^(what|how|why|where|when|who|which|tell me|describe|walk me|talk about|in what way)\b")
_AUX = re.compile(r"^(do|does|did|are|is|was|were|have|has|had|can|could|would|will|should|shall|may|might|am|"
                  r"isn't|aren't|don't|didn't|won't|wouldn't|haven't)\b")
_REFLECT = re.compile(r"\b(it sounds like|sounds like|so you|you feel|you're feeling|it seems|you seem|you're saying|"
                      r"i hear|what i'm hearing|you're worried|you're not sure|part of you|on (the )?one hand)\b")
_COMPLEX = re.compile(r"\b(but|part of you|on the other hand|even though|although|really|deep down|afraid|scared|"
                      r"worried|frustrat|overwhelm|ashamed|embarrass)")
_ADVICE = re.compile(r"\b(you should|you could|you might want|i suggest|i'd suggest|i recommend|try to|you need to|"
                     r"you must|why don't you|have you tried|what if you|make sure)\b")
_AFFIRM = re.compile(r"\b(great|good job|well done|proud|impressive|congratulations|i appreciate|brave|courage|"
                     r"good for you|excellent|nice work|you've done|you did (a|really))\b")
_INFO = re.compile(r"\b(research|studies|usually|generally|most students|the deadline|the rubric|the policy|"
                   r"the library|the writing cent(re|er)|according to)\b")

_ZH_Q = re.compile(r"[吗呢？?]\s*$|什么|怎么|为什么|哪|是否|能不能|是不是|有没有")
_ZH_OPEN = re.compile(r"什么|怎么|为什么|哪些|如何|说说|讲讲|谈谈")
_ZH_REFLECT = re.compile(r"听起来|你觉得|你感到|你感觉|看来|似乎|你是说|你担心|你好像")
_ZH_ADVICE = re.compile(r"你应该|建议|你可以|试试|不妨|最好")
_ZH_AFFIRM = re.compile(r"很好|真棒|不错|了不起|做得好|勇气|很努力")


def keyword_intent(text: str) -> str:
    """One of services.practice.intents.LABELS, from keywords alone."""
    raw = text.strip()
    t = raw.lower()
    if re.search(r"[\u4e00-\u9fff]", raw):
        if _ZH_REFLECT.search(raw):
            return "complex_reflection" if len(raw) > 20 else "simple_reflection"
        if _ZH_Q.search(raw):
            return "open_question" if _ZH_OPEN.search(raw) else "closed_question"
        if _ZH_ADVICE.search(raw):
            return "advice"
        if _ZH_AFFIRM.search(raw):
            return "affirmation"
        return "other"
    last = re.split(r"(?<=[.!?])\s+", t)[-1] if t else t
    if _REFLECT.search(t) and not t.endswith("?"):
        return "complex_reflection" if _COMPLEX.search(t) else "simple_reflection"
    if t.endswith("?") or _WH.match(last) or _AUX.match(last):
        return "open_question" if (_WH.match(last) or _WH.match(t)) else "closed_question"
    if _ADVICE.search(t):
        return "advice"
    if _AFFIRM.search(t):
        return "affirmation"
    if _INFO.search(t):
        return "giving_information"
    return "other"
