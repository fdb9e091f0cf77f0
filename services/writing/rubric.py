"""Rubrics, trait mapping, evidence spans and templated rationales/feedback (English and Chinese).

The scorer predicts six prompt-8-style traits (ideas, organization, voice, word_choice, fluency, conventions),
anchored on the cross-prompt holistic score. Each rubric criterion is a weighted mean of some of these
(`ANCHORS`); a custom criterion is mapped by `maps_to` when given, else by keywords in its id/name/description,
else onto the holistic score.
"""

from __future__ import annotations

import re

from services.writing.metrics import Analysis

BUILTIN = [
    {"id": "ideas", "name": {"en": "Ideas and thesis", "zh": "观点与论点"}},
    {"id": "organization", "name": {"en": "Organisation", "zh": "结构与组织"}},
    {"id": "evidence", "name": {"en": "Evidence and support", "zh": "论据与支撑"}},
    {"id": "style", "name": {"en": "Style and voice", "zh": "文风与语气"}},
    {"id": "language", "name": {"en": "Language and grammar", "zh": "语言与语法"}},
    {"id": "conventions", "name": {"en": "Conventions", "zh": "书写规范"}},
]
BUILTIN_SCALE = (1.0, 6.0)
# criterion -> scorer traits it averages (holistic = the cross-prompt overall quality)
ANCHORS = {
    "ideas": ("ideas",), "organization": ("organization",), "evidence": ("ideas", "holistic"),
    "style": ("voice", "word_choice"), "language": ("fluency", "word_choice"), "conventions": ("conventions",),
    "holistic": ("holistic",),
}
SKILLS = {"ideas": "thesis", "organization": "organization", "evidence": "evidence", "style": "word_choice",
          "language": "grammar", "conventions": "grammar", "holistic": "thesis"}
_KEYWORDS = [
    ("conventions", r"convention|spell|punctuat|mechanic|capital|format|citation style|标点|错别字|规范|格式"),
    ("language", r"grammar|language|sentence|fluency|syntax|语法|句子|语言|流畅"),
    ("style", r"style|voice|tone|word choice|vocabular|diction|register|audience|文风|语气|用词|词汇"),
    ("evidence", r"evidence|support|source|citation|example|reason|literature|data|论据|证据|例子|引用|文献"),
    ("organization", r"organi[sz]|structure|coheren|paragraph|transition|flow|order|结构|段落|连贯|组织|过渡"),
    ("ideas", r"idea|thesis|claim|argument|content|position|focus|purpose|research question|method|观点|论点|内容|主题|立意"),
]
VALID_TARGETS = tuple(k for k in ANCHORS)


def map_criterion(criterion_id: str, name: str, description: str, maps_to: list[str] | None) -> tuple[str, ...]:
    if maps_to:
        return tuple(maps_to)
    text = f"{criterion_id} {name} {description}".lower().replace("_", " ")
    for target, pattern in _KEYWORDS:
        if re.search(pattern, text):
            return (target,)
    return ("holistic",)


def criterion_value(targets: tuple[str, ...], traits: dict[str, float], holistic: float) -> tuple[float, list[str]]:
    """Mean of the scorer traits behind these built-in criteria; returns (value in [0,1], trait names)."""
    names: list[str] = []
    for t in targets:
        names.extend(ANCHORS.get(t, (t,)))
    values = [holistic if n == "holistic" else traits[n] for n in names]
    return sum(values) / len(values), sorted(set(names))


# --- evidence -----------------------------------------------------------------------------------------------------
_THESIS_CUES = re.compile(r"\b(I (?:think|believe|feel|argue)|in my opinion|should|must|this (?:essay|paper|proposal)"
                          r"|we (?:propose|argue)|the purpose)\b|我认为|我觉得|应该|本文|总之", re.I)
_SUPPORT_CUES = re.compile(r"\b(for example|for instance|because|according to|research|studies|percent|data|"
                           r"such as)\b|例如|比如|因为|根据|研究|数据|\d+%", re.I)


def evidence_for(criterion: str, a: Analysis, text: str, issue_spans: dict[str, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    sents = a.sentences
    spans: list[tuple[int, int]] = []
    if criterion in ("ideas", "holistic"):
        cued = [s for s in sents if _THESIS_CUES.search(text[s[0]:s[1]])]
        spans = (cued[:1] + sents[:1]) if cued else sents[:1]
    elif criterion == "organization":
        spans = [(s, e) for s, e, _ in a.transitions[:3]] or [p for p in sents[:1]] + sents[-1:]
    elif criterion == "evidence":
        spans = list(a.citations[:2]) + [s for s in sents if _SUPPORT_CUES.search(text[s[0]:s[1]])][:2]
        if not spans and len(sents) > 1:
            spans = sents[1:2]
    elif criterion == "style":
        spans = issue_spans.get("repetition", [])[:2] + issue_spans.get("long_sentence", [])[:1]
        if not spans and sents:
            spans = [max(sents, key=lambda s: s[1] - s[0])]
    elif criterion == "language":
        spans = (issue_spans.get("grammar", []) + issue_spans.get("long_sentence", []))[:3]
    elif criterion == "conventions":
        spans = (issue_spans.get("spelling", []) + issue_spans.get("punctuation", []))[:3]
    out = []
    for s in spans:
        if s not in out and s[1] > s[0]:
            out.append(s)
    return out[:3]


# --- rationales ---------------------------------------------------------------------------------------------------
def band(value: float) -> str:
    return "low" if value < 0.4 else ("mid" if value < 0.7 else "high")


_RATIONALE = {
    "en": {
        "ideas": {"low": "The main idea is hard to find or not developed; the reader cannot tell what position the text takes.",
                  "mid": "A main idea is present, but it is stated loosely and not developed evenly across the text.",
                  "high": "The main idea is clear and developed with purpose throughout the text."},
        "organization": {"low": "The text reads as a list of thoughts; paragraphs and transitions do not guide the reader.",
                         "mid": "There is a visible structure, but links between parts are thin or repetitive.",
                         "high": "The structure is clear: paragraphs build on each other and transitions guide the reader."},
        "evidence": {"low": "Claims are asserted without examples, reasons or sources.",
                     "mid": "Some claims are supported, but the support is general or not explained.",
                     "high": "Claims are backed with specific examples, reasons or sources that are explained."},
        "style": {"low": "Word choice is plain and repetitive, and sentences follow one pattern.",
                  "mid": "The voice is appropriate, with some repetition or flat phrasing.",
                  "high": "Varied, precise wording and a consistent voice suit the purpose and audience."},
        "language": {"low": "Frequent grammar problems and hard-to-follow sentences get in the way of meaning.",
                     "mid": "Sentences are mostly correct; some are awkward, run on or have grammar slips.",
                     "high": "Sentences are controlled and varied, with few grammar problems."},
        "conventions": {"low": "Spelling, capitalisation and punctuation errors are frequent.",
                        "mid": "Conventions are mostly correct, with a few spelling or punctuation slips.",
                        "high": "Spelling, capitalisation and punctuation are handled well."},
        "holistic": {"low": "Overall the text does not yet meet this criterion.",
                     "mid": "Overall the text partly meets this criterion.",
                     "high": "Overall the text meets this criterion well."},
    },
    "zh": {
        "ideas": {"low": "中心观点不清楚或没有展开，读者看不出文章的立场。",
                  "mid": "文章有中心观点，但表述比较笼统，展开也不够均衡。",
                  "high": "中心观点明确，并在全文中得到有目的的展开。"},
        "organization": {"low": "文章像是想法的罗列，段落和过渡没有引导读者。",
                         "mid": "结构大致可见，但各部分之间的衔接较弱或重复。",
                         "high": "结构清晰，段落层层推进，过渡自然。"},
        "evidence": {"low": "观点缺少例子、理由或出处的支撑。",
                     "mid": "部分观点有支撑，但论据较笼统或缺少解释。",
                     "high": "观点有具体的例子、理由或出处支撑，并有解释。"},
        "style": {"low": "用词单一、重复，句式变化少。",
                  "mid": "语气得体，但有些重复或平淡的表达。",
                  "high": "用词准确多样，语气一致，符合写作目的和读者。"},
        "language": {"low": "语法问题较多，句子难以理解，影响表达。",
                     "mid": "句子基本正确，个别句子冗长或有语病。",
                     "high": "句子控制得当、富于变化，语法问题很少。"},
        "conventions": {"low": "标点、格式等书写规范问题较多。",
                        "mid": "书写规范基本正确，有少量标点或格式问题。",
                        "high": "标点和格式使用规范。"},
        "holistic": {"low": "整体上尚未达到该项要求。", "mid": "整体上部分达到该项要求。", "high": "整体上很好地达到了该项要求。"},
    },
}

_ADVICE = {
    "en": {"ideas": "State your main point in one clear sentence early on, and make every paragraph serve it.",
           "organization": "Give each paragraph one job, open it with a topic sentence, and link paragraphs with transitions.",
           "evidence": "Back each claim with a specific example, fact or source, and explain how it supports the point.",
           "style": "Vary sentence openings and replace repeated or vague words with precise ones.",
           "language": "Split long sentences and reread each one aloud to catch grammar slips.",
           "conventions": "Proofread for spelling, capital letters and punctuation before submitting.",
           "holistic": "Revise this part of the text against the rubric's description."},
    "zh": {"ideas": "在开头用一句话清楚地提出中心观点，让每一段都为它服务。",
           "organization": "每段只讲一个要点，用主题句开头，并用过渡词连接各段。",
           "evidence": "为每个观点补充具体的例子、事实或出处，并说明它如何支持观点。",
           "style": "变换句式开头，把重复或含糊的词换成更准确的词。",
           "language": "把过长的句子拆开，逐句朗读检查语病。",
           "conventions": "提交前检查标点符号和格式，中文句子使用全角标点。",
           "holistic": "对照评分标准的描述修改这一部分。"},
}


def _metric_note(criterion: str, a: Analysis, lang: str) -> str:
    m = a.metrics
    en = lang != "zh"
    unit = "words" if m["unit"] == "words" else "characters"
    length = m["words"] if unit == "words" else m["characters"]
    if criterion in ("ideas", "holistic"):
        return (f" The text has {length} {unit} in {m['paragraphs']} paragraph(s)." if en
                else f"全文 {length} {'词' if unit == 'words' else '字'}，共 {m['paragraphs']} 段。")
    if criterion == "organization":
        t = m["transitions"]
        used = ", ".join(f"\"{u['term']}\"" for u in t["used"][:3])
        return ((f" It uses {t['count']} transition(s)" + (f" ({used})." if used else ".")) if en
                else f"使用了 {t['count']} 个过渡词" + (f"（{'、'.join(u['term'] for u in t['used'][:3])}）。" if t['used'] else "。"))
    if criterion == "evidence":
        return (f" Citations found: {m['citations']['count']}." if en else f"检测到的引用：{m['citations']['count']} 处。")
    if criterion == "style":
        ld = m["lexical_diversity"]
        rep = m["repetition"]["repeated_words"]
        words = ", ".join(f"\"{r['word']}\"" for r in rep[:2])
        return ((f" Lexical diversity (MTLD) is {ld['mtld']:.0f}" + (f"; most repeated: {words}." if words else "."))
                if en else f"词汇多样性（MTLD）为 {ld['mtld']:.0f}" + (f"；重复最多的词：{'、'.join(r['word'] for r in rep[:2])}。" if rep else "。"))
    if criterion == "language":
        sl = m["sentence_length"]
        return ((f" Sentences average {sl['mean']:.0f} words (longest {sl['max']}); {m['grammar']['errors']} grammar "
                 "problem(s) were flagged.") if en
                else f"句子平均 {sl['mean']:.0f} 字（最长 {sl['max']} 字）；发现 {m['grammar']['errors']} 处语法或标点问题。")
    if criterion == "conventions":
        return ((f" {m['spelling']['errors']} possible spelling error(s) were found.") if en
                else f"发现 {m['grammar']['errors']} 处书写规范问题。")
    return ""


def rationale(criterion: str, name: str, value: float, a: Analysis, lang: str, custom: bool) -> str:
    table = _RATIONALE["zh" if lang == "zh" else "en"]
    base = criterion if criterion in table else "holistic"
    text = table[base][band(value)]
    if custom:
        text = (f"{name}: " if lang != "zh" else f"{name}：") + text
    return text + _metric_note(base, a, lang)


def advice(criterion: str, lang: str) -> str:
    table = _ADVICE["zh" if lang == "zh" else "en"]
    return table.get(criterion, table["holistic"])


def overall_rationale(value: float, weakest: list[str], lang: str) -> str:
    if lang == "zh":
        level = {"low": "整体水平还需要明显提高", "mid": "整体水平中等", "high": "整体水平较好"}[band(value)]
        return f"{level}（由在人工评分作文上训练的评分模型给出）。最需要改进的方面：{'、'.join(weakest)}。"
    level = {"low": "Overall the text needs substantial revision", "mid": "Overall the text is developing",
             "high": "Overall the text is strong"}[band(value)]
    return f"{level} (scored by a model trained on human-scored essays). Work first on: {', '.join(weakest)}."
