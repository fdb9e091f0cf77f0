"""The skills a course practises, and how a topic or a weak point maps onto one.

A small keyword taxonomy (English and Chinese) for writing courses plus maths word problems. A topic
that matches none becomes its own skill ("topic:<slug>"), so nothing is lost, only less pooled."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Skill:
    id: str
    name_en: str
    name_zh: str
    keywords: tuple[str, ...]


SKILLS: tuple[Skill, ...] = (
    Skill("thesis", "writing a clear thesis statement", "写出清晰的论点（thesis statement）",
          ("thesis", "main claim", "central claim", "argument", "论点", "中心论点", "主旨", "论题")),
    Skill("evidence", "supporting claims with evidence", "用论据支撑观点",
          ("evidence", "support", "citation", "cite", "source", "quote", "example", "论据", "证据", "引用", "例子")),
    Skill("organization", "organising paragraphs and structure", "段落与文章结构",
          ("structure", "organi", "paragraph", "outline", "topic sentence", "introduction", "conclusion",
           "结构", "段落", "提纲", "主题句", "开头", "结尾")),
    Skill("coherence", "coherence and transitions", "连贯与过渡",
          ("coherence", "cohesion", "transition", "flow", "连贯", "过渡", "衔接")),
    Skill("grammar", "grammar and mechanics", "语法与标点",
          ("grammar", "tense", "punctuation", "agreement", "spelling", "mechanics", "语法", "时态", "标点", "拼写")),
    Skill("word_choice", "word choice and style", "用词与文风",
          ("word choice", "vocabulary", "wording", "style", "tone", "concise", "用词", "词汇", "措辞", "文风")),
    Skill("math_word_problems", "solving maths word problems", "解数学应用题",
          ("how many", "how much", "total", "cost", "price", "math", "maths", "arithmetic", "equation", "solve",
           "多少", "一共", "计算", "方程", "应用题")),
)
BY_ID = {skill.id: skill for skill in SKILLS}
_SLUG = re.compile(r"[^a-z0-9\u3400-\u9fff]+")


def skill_for(text: str, *, numeric_answer: bool = False) -> str:
    """The skill a topic (or a weak point's description) is about."""
    lowered = (text or "").lower()
    if numeric_answer:
        return "math_word_problems"
    best, hits = None, 0
    for skill in SKILLS:
        count = sum(1 for keyword in skill.keywords if keyword in lowered)
        if count > hits:
            best, hits = skill, count
    if best is not None:
        return best.id
    slug = _SLUG.sub("-", lowered).strip("-")[:40]
    return f"topic:{slug or 'general'}"


def skill_name(skill_id: str, language: str) -> str:
    skill = BY_ID.get(skill_id)
    if skill is None:
        return skill_id.removeprefix("topic:").replace("-", " ")
    return skill.name_zh if language == "zh" else skill.name_en


VALID_ID = re.compile(r"^[A-Za-z0-9_.:\-\u3400-\u9fff]{1,80}$")
