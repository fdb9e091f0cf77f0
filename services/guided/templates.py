"""The words of each move, in English and Chinese. The pedagogy lives here: a reply built from these
templates alone is a complete tutoring turn (the LLM only rephrases it, and the guard checks that).

Hints for a problem with a worked solution (`solution`, never shown whole) are drawn from its steps:
level 1 points at the question, level 2 gives the first step's operation without its result, level 3
shows every step but the last and asks for the last. Any text carrying the final answer is dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.guided.leak import KnownAnswer, check_leak
from services.guided.skills import skill_name

T = dict[str, str]  # language -> text

DIAGNOSE: T = {
    "en": "Let's work on {skill} together. Before I give any hints: what have you tried so far, and where exactly "
          "do you get stuck?{focus}",
    "zh": "我们一起来练习{skill}。在给提示之前，先说说：你已经尝试过什么？具体卡在哪一步？{focus}",
}
FOCUS: T = {
    "en": " (Your recent writing feedback noted: {weak}. We can practise that too.)",
    "zh": "（你最近的写作反馈提到：{weak}。我们也可以顺便练习这一点。）",
}
ASK: T = {
    "en": "Good, keep going. What do you think the next step is, and why?",
    "zh": "很好，继续。你觉得下一步应该做什么？为什么？",
}
DEMAND_PREFIX: T = {
    "en": "I won't just give you the answer, because working it out is how you learn it, but here is a hint. ",
    "zh": "我不会直接给你答案，自己推出来才能真正学会。给你一个提示：",
}
CHECK: T = {
    "en": "That's right, well done! Can you explain in your own words why your method works, and how you would "
          "check the result?",
    "zh": "答对了，做得好！你能用自己的话解释一下为什么这个方法可行吗？你会怎样检查结果？",
}
CHECK_OPEN: T = {
    "en": "Let's check your understanding: in one sentence, what is the key idea of {skill}, and how would you "
          "apply it to your own draft?",
    "zh": "检查一下理解：用一句话说说{skill}的关键是什么？你会怎样把它用到自己的草稿里？",
}
SUMMARY: T = {
    "en": "Summary: we worked on {skill}. {outcome} Your mastery estimate is now {mastery}. Next time, try a similar "
          "problem on your own first, then check each step.",
    "zh": "小结：我们练习了{skill}。{outcome}你目前的掌握度估计为{mastery}。下次先独立尝试一道类似的题，再逐步检查。",
}
OUTCOME_SOLVED: T = {"en": "You reached the answer yourself.", "zh": "你自己得出了答案。"}
OUTCOME_OPEN: T = {"en": "You worked through the key ideas step by step.", "zh": "你一步步梳理了关键要点。"}

MATH_HINTS: dict[int, T] = {
    1: {"en": "Read the question again: what exactly does it ask for? List the quantities you know and what each "
              "one means, and cross out any that do not matter.",
        "zh": "再读一遍题目：它到底问的是什么？列出已知的量以及各自的含义，划掉与问题无关的信息。"},
    2: {"en": "Think about how the quantities are related: which of them can you combine first, and with which "
              "operation? Write that first step down.",
        "zh": "想一想这些量之间的关系：哪两个量可以先结合起来？用什么运算？把第一步写下来。"},
    3: {"en": "Break it into steps: first find the intermediate quantity the question depends on, then use it to "
              "get what is asked. Which intermediate quantity is that?",
        "zh": "把问题拆成几步：先求出问题所依赖的中间量，再用它求出所问的量。这个中间量是什么？"},
}
STEP_HINT_2: T = {"en": "Try this first step: {step} = ? What do you get?", "zh": "先试试这一步：{step} = ？你算出多少？"}
STEP_HINT_3: T = {"en": "Here are the steps so far: {steps}. Now do the last step yourself: {last} = ?",
                  "zh": "前面的步骤是：{steps}。最后一步请你自己完成：{last} = ？"}

WRITING_HINTS: dict[str, dict[int, T]] = {
    "thesis": {
        1: {"en": "A thesis statement answers the question your essay asks. What is the one claim you want your reader "
                  "to accept by the end?",
            "zh": "论点（thesis statement）是对文章所提问题的回答。读完全文后，你希望读者接受的那一个观点是什么？"},
        2: {"en": "A clear thesis has a topic, a position someone could disagree with, and a reason: "
                  "\"[topic] should/does ... because ...\". Which of these three is missing from yours?",
            "zh": "清晰的论点包含三部分：话题、一个可以被反驳的立场、一个理由：“[话题] 应该/是……，因为……”。你的句子缺了哪一部分？"},
        3: {"en": "Test your thesis: could someone reasonably disagree? Is it one sentence? Does it name your main "
                  "reason? Rewrite it so that all three are yes, and send me your new version.",
            "zh": "检验你的论点：别人能合理地反对吗？它是一句话吗？它说出了主要理由吗？改写到三项都满足，然后把新版本发给我。"},
    },
    "evidence": {
        1: {"en": "Which sentence in your paragraph is the claim, and which sentences show the reader it is true?",
            "zh": "你这一段里哪句是观点？哪些句子向读者证明它是对的？"},
        2: {"en": "Good evidence is specific: a fact, a figure, a quotation or an example, followed by a sentence that "
                  "explains how it supports the claim. Which of your claims lacks that?",
            "zh": "好的论据要具体：事实、数据、引文或例子，后面再跟一句解释它如何支持观点。你的哪个观点缺少这些？"},
        3: {"en": "Pick your weakest claim, add one concrete piece of evidence, and write one sentence linking it back "
                  "to the claim. Show me the result.",
            "zh": "挑出最薄弱的一个观点，加一条具体论据，再写一句话把它和观点联系起来。把结果发给我。"},
    },
    "organization": {
        1: {"en": "What is the job of each paragraph? Try to name each one's main point in a few words.",
            "zh": "每一段承担什么任务？试着用几个词概括每段的要点。"},
        2: {"en": "Each body paragraph should open with a topic sentence that supports the thesis, then develop only "
                  "that point. Which paragraph mixes two points?",
            "zh": "每个主体段应以支持论点的主题句开头，并只展开这一个要点。哪一段混入了两个要点？"},
        3: {"en": "Write a one-line outline: thesis, then one line per paragraph. Reorder the lines until each follows "
                  "from the one before, then send me the outline.",
            "zh": "写一个一行一段的提纲：先写论点，再每段一行。调整顺序，直到每一行都承接上一行，然后把提纲发给我。"},
    },
}
GENERIC_HINTS: dict[int, T] = {
    1: {"en": "Let's narrow it down: what is the one thing about {skill} you find hardest right now?",
        "zh": "我们先缩小范围：关于{skill}，你现在觉得最难的一点是什么？"},
    2: {"en": "Look at one short example of your own work and compare it with what good {skill} looks like. What is "
              "the biggest difference you notice?",
        "zh": "拿一小段你自己的作品，和好的{skill}做比较。你注意到最大的差别是什么？"},
    3: {"en": "Try one small revision focused only on {skill}, then show me the before and after.",
        "zh": "只针对{skill}做一次小修改，然后把修改前后的版本发给我。"},
}

WORKED_MATH: list[dict] = [
    {"en": "Here is a similar problem, worked out: \"A baker makes 7 trays of 6 muffins and sells 9. How many are "
           "left?\" Step 1: total made = 7 × 6 = 42. Step 2: left = 42 − 9 = 33. Now use the same steps on your "
           "problem: what is your step 1?",
     "zh": "看一道类似的题的完整解法：“面包师做了7盘、每盘6个松饼，卖掉9个。还剩几个？”第一步：一共做了 7 × 6 = 42 个。"
           "第二步：剩下 42 − 9 = 33 个。现在用同样的步骤做你的题：你的第一步是什么？",
     "numbers": (7, 6, 9, 42, 33)},
    {"en": "Here is a similar problem, worked out: \"Tickets cost $4 each. Mia buys 5 tickets and pays with $50. "
           "How much change does she get?\" Step 1: cost = 5 × 4 = 20. Step 2: change = 50 − 20 = 30. Now apply "
           "the same steps to your problem: what is your step 1?",
     "zh": "看一道类似的题的完整解法：“每张票4美元，米娅买了5张，付了50美元，找零多少？”第一步：花费 5 × 4 = 20。"
           "第二步：找零 50 − 20 = 30。现在用同样的步骤做你的题：你的第一步是什么？",
     "numbers": (4, 5, 50, 20, 30)},
    {"en": "Here is a similar problem, worked out: \"A class of 28 splits into teams of 4, and each team needs 3 "
           "balls. How many balls are needed?\" Step 1: teams = 28 ÷ 4 = 7. Step 2: balls = 7 × 3 = 21. Now try the "
           "same two steps on your problem: what is your step 1?",
     "zh": "看一道类似的题的完整解法：“全班28人，每4人一队，每队需要3个球。一共需要几个球？”第一步：队数 28 ÷ 4 = 7。"
           "第二步：球数 7 × 3 = 21。现在用同样的两步做你的题：你的第一步是什么？",
     "numbers": (28, 4, 3, 7, 21)},
]
WORKED_WRITING: dict[str, T] = {
    "thesis": {"en": "Here is a worked example on a different topic. Weak: \"Social media is a big part of life.\" "
                     "(no position). Better: \"Schools should teach social-media literacy, because students already "
                     "get most of their news there.\" (topic + arguable position + reason). Now do the same for your "
                     "topic: what is your position, and your main reason?",
               "zh": "看一个不同话题的示例。较弱：“社交媒体是生活的重要部分。”（没有立场）。较好：“学校应当开设社交媒体素养课，"
                     "因为学生的大部分新闻都来自社交媒体。”（话题 + 可争论的立场 + 理由）。现在按同样方法写你的话题：你的立场和主要理由是什么？"},
}
WORKED_GENERIC: T = {
    "en": "Here is a worked example on a different topic: a student wrote \"Exercise is good.\" and revised it to "
          "\"Thirty minutes of daily exercise improves students' concentration, as three recent studies show.\", "
          "being specific about what, who and why. Which part of your own work could get the same treatment?",
    "zh": "看一个不同话题的示例：一位同学把“运动很好。”改成了“每天运动三十分钟能提高学生的专注力，近期三项研究都证明了这一点。”"
          "——明确了什么、谁、为什么。你自己的作品中哪一部分可以这样修改？",
}


@dataclass(frozen=True)
class MoveContext:
    move: str
    hint_level: int
    language: str
    skill: str
    demand: bool = False  # the student asked for the answer outright
    solution: str = ""
    answer: KnownAnswer | None = None
    solved: bool = False
    weak_point: str = ""
    mastery: float | None = None


def _lang(table: T, language: str) -> str:
    return table.get(language) or table["en"]


_CALC = re.compile(r"<<[^>]*>>")


def solution_steps(solution: str) -> list[str]:
    """The steps of a worked solution: its lines, without calculator marks or a bare final-answer line."""
    text = _CALC.sub("", solution.replace("\\n", "\n"))
    if "####" in text:
        text = text.split("####", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and re.fullmatch(r"[-$\d.,\s]+", lines[-1]):
        lines = lines[:-1]
    return lines


def _without_result(step: str) -> str:
    """"So she had 12+3=15 spoons." -> "12+3": the operation of a step, not its result."""
    if "=" not in step:
        return ""
    left = step.rsplit("=", 1)[0]
    match = re.search(r"[\d$(][\d\s$.,+\-*/×÷x()%]*$", left)
    return (match.group().strip() if match else "").strip()


def _safe(text: str, answer: KnownAnswer | None) -> bool:
    return bool(text) and not check_leak(text, answer).leaked


def hint_text(ctx: MoveContext) -> str:
    level = max(1, min(3, ctx.hint_level))
    name = skill_name(ctx.skill, ctx.language)
    steps = solution_steps(ctx.solution) if ctx.solution else []
    if steps and level >= 2:
        if level == 3 and len(steps) >= 2:
            shown = [s for s in steps[:-1] if _safe(s, ctx.answer)]
            last = _without_result(steps[-1])
            text = _lang(STEP_HINT_3, ctx.language).format(steps=" ".join(shown).rstrip(". "), last=last)
            if shown and last and _safe(text, ctx.answer):
                return text
        first = _without_result(steps[0])
        text = _lang(STEP_HINT_2, ctx.language).format(step=first)
        if first and _safe(text, ctx.answer):
            return text
    if ctx.skill == "math_word_problems" or ctx.solution or (ctx.answer and ctx.answer.number is not None):
        return _lang(MATH_HINTS[level], ctx.language)
    bank = WRITING_HINTS.get(ctx.skill, GENERIC_HINTS)
    return _lang(bank[level], ctx.language).format(skill=name)


def worked_example_text(ctx: MoveContext) -> str:
    if ctx.skill == "math_word_problems" or ctx.solution or (ctx.answer and ctx.answer.number is not None):
        for example in WORKED_MATH:
            text = _lang(example, ctx.language)
            if _safe(text, ctx.answer):
                return text
        return _lang(MATH_HINTS[3], ctx.language)
    table = WORKED_WRITING.get(ctx.skill, WORKED_GENERIC)
    text = _lang(table, ctx.language)
    return text if _safe(text, ctx.answer) else hint_text(MoveContext(**{**ctx.__dict__, "hint_level": 3}))


def template_reply(ctx: MoveContext) -> str:
    """The whole reply for a move, from templates alone."""
    lang = ctx.language
    name = skill_name(ctx.skill, lang)
    if ctx.move == "diagnose":
        focus = _lang(FOCUS, lang).format(weak=ctx.weak_point) if ctx.weak_point else ""
        return _lang(DIAGNOSE, lang).format(skill=name, focus=focus)
    if ctx.move == "ask":
        return _lang(ASK, lang)
    if ctx.move == "hint":
        prefix = _lang(DEMAND_PREFIX, lang) if ctx.demand else ""
        return prefix + hint_text(ctx)
    if ctx.move == "worked_example":
        prefix = _lang(DEMAND_PREFIX, lang) if ctx.demand else ""
        return prefix + worked_example_text(ctx)
    if ctx.move == "check_understanding":
        if ctx.solved:
            return _lang(CHECK, lang)
        return _lang(CHECK_OPEN, lang).format(skill=name)
    if ctx.move == "summarise":
        outcome = _lang(OUTCOME_SOLVED if ctx.solved else OUTCOME_OPEN, lang)
        mastery = f"{ctx.mastery:.0%}" if ctx.mastery is not None else "-"
        return _lang(SUMMARY, lang).format(skill=name, outcome=outcome, mastery=mastery)
    raise ValueError(f"unknown move {ctx.move!r}")


MOVE_INSTRUCTIONS: T = {
    "diagnose": "Ask the student what they have tried and where they are stuck.",
    "ask": "Ask one guiding question about the next step.",
    "hint": "Give this hint (level {level} of 3) and end with a question.",
    "worked_example": "Show the worked example of a different problem, then ask the student to apply it.",
    "check_understanding": "Ask the student to explain their reasoning.",
    "summarise": "Summarise what the student practised and what to do next.",
}
