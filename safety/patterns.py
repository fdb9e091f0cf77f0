"""Hand-written patterns: prompt injection (en/zh) and high-precision phrases per category.

Each pattern carries a score: 0.9 for phrasings that are unsafe on their own ("kill myself",
"ignore all previous instructions"), lower for words that are only a hint and need another
check to agree (a hint alone stays under the flag threshold of 0.5). Chinese phrases are
matched on the text as is (no word boundaries in Chinese); English ones on word boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LISTS = Path(__file__).parent / "lists"


@dataclass(frozen=True)
class Pattern:
    category: str
    regex: re.Pattern
    score: float
    lang: str  # en | zh | any


def _en(category: str, score: float, *phrases: str) -> list[Pattern]:
    return [Pattern(category, re.compile(rf"(?i)(?<![\w]){p}(?![\w])"), score, "en") for p in phrases]


def _zh(category: str, score: float, *phrases: str) -> list[Pattern]:
    return [Pattern(category, re.compile(p), score, "zh") for p in phrases]


_IGNORE = r"(?:ignore|disregard|forget|override|skip|bypass|drop)"
_PRIOR = r"(?:all\s+|any\s+|the\s+|your\s+|of\s+)*(?:previous|prior|above|earlier|preceding|original|initial|system|developer)"
_RULES = r"(?:instructions?|prompts?|rules?|directions?|guidelines?|messages?|context|constraints?|restrictions?)"

INJECTION = [
    *_en("prompt_injection", 0.95,
         rf"{_IGNORE}\s+(?:all\s+|any\s+|everything\s+)?{_PRIOR}\s+{_RULES}",
         rf"{_IGNORE}\s+(?:all\s+|any\s+)?(?:your|the|these|those)\s+{_RULES}",
         rf"{_IGNORE}\s+(?:everything|all)\s+(?:you\s+were\s+told|above|before)",
         r"(?:new|updated|revised)\s+(?:system\s+)?instructions?\s*:",
         r"you\s+are\s+no\s+longer\s+(?:a|an|the)\s+\w+",
         r"from\s+now\s+on,?\s+you\s+(?:are|will|must|act)",
         r"(?:reveal|print|show|output|repeat|leak|tell\s+me|display|dump)\s+(?:me\s+)?(?:your|the)\s+"
         r"(?:full\s+|entire\s+|hidden\s+|original\s+|secret\s+|initial\s+)?(?:system\s+prompt|instructions|"
         r"system\s+message|developer\s+message|hidden\s+prompt|prompt)",
         r"(?:what\s+(?:is|was|are)\s+)(?:your|the)\s+(?:system\s+prompt|initial\s+instructions|hidden\s+instructions)",
         r"repeat\s+(?:the\s+|all\s+)?(?:words|text)\s+above",
         r"(?:act|behave)\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:dan|an?\s+unrestricted|an?\s+unfiltered|a\s+jailbroken)",
         r"(?:developer|debug|god|jailbreak|dan)\s+mode\s+(?:enabled|on|activated)",
         r"enable\s+(?:developer|debug|god|jailbreak|dan)\s+mode",
         r"(?:call|invoke|use|run|execute)\s+the\s+[\w.-]+\s+(?:tool|function)\s+(?:with|and|to)\b.{0,80}"
         r"(?:send|email|forward|upload|delete|transfer|post)",
         r"(?:send|forward|email|upload|post|exfiltrate)\s+(?:all\s+|the\s+)?(?:conversation|chat\s+history|"
         r"user(?:'s)?\s+data|student\s+data|(?:api\s+)?keys?|credentials|passwords?|secrets?)\s+to\b",
         r"<\s*/?\s*(?:system|im_start|im_end)\s*>", r"\[/?(?:system|inst)\]", r"###\s*(?:system|instruction)s?\s*:?"),
    *_en("prompt_injection", 0.6,
         r"you\s+must\s+now", r"pretend\s+(?:that\s+)?you\s+(?:are|have)\s+no\s+(?:rules|restrictions|filters)",
         r"without\s+(?:any\s+)?(?:restrictions|filters|censorship|rules)",
         r"assistant\s+must\s+(?:respond|answer|reply)\s+only", r"(?:ai|assistant|model)\s*:\s*ignore"),
    *_zh("prompt_injection", 0.95,
         r"(?:忽略|无视|忘记|忘掉|不要理会|不用管|跳过|覆盖)(?:掉)?(?:你)?(?:之前|以前|前面|上面|上述|先前|原来|原先|所有|全部|一切)?的?"
         r"(?:所有|全部|一切)?的?(?:指示|指令|提示|规则|设定|要求|命令|系统提示|限制|说明)",
         r"(?:输出|打印|显示|告诉我|透露|泄露|重复|复述)(?:一下)?(?:你的|你)?(?:完整的|全部的|原始的|隐藏的)?"
         r"(?:系统提示词?|系统指令|初始指令|隐藏指令|系统消息|提示词)",
         r"你(?:现在)?(?:不再是|已经不是)(?:一个)?",
         r"(?:从现在(?:开始|起)|接下来)，?你(?:是|将|必须|要)(?:扮演|成为)?(?:一个)?(?:没有|不受|无)(?:任何)?(?:限制|约束|规则)",
         r"(?:开发者|调试|越狱|上帝)模式(?:已)?(?:开启|启动|激活|启用)",
         r"(?:新的|更新的)(?:系统)?指令\s*[:：]",
         r"(?:调用|使用|执行)[\w\u4e00-\u9fff.-]{0,20}(?:工具|函数).{0,40}(?:发送|转发|上传|删除|邮件)",
         r"(?:把|将)(?:所有|全部)?(?:对话|聊天记录|用户数据|学生数据|密钥|密码|凭证).{0,10}(?:发送|转发|上传)(?:到|给)"),
    # more rephrasings (sixth session): other verbs and rule words, voided rules, hidden notes addressed
    # to the model, dumps of the context; each needs both an override verb/marker and a rule/AI object
    *_zh("prompt_injection", 0.95,
         r"(?:忽略|无视|忘记|忘掉|不要理会|别理会|别管|不用管|抛开|丢掉|放弃|覆盖)(?:掉)?(?:你)?"
         r"(?:之前|以前|前面|上面|以上|上述|先前|原来|原先|原有|所有|全部|一切)的?(?:所有|全部|一切)?的?"
         r"(?:指导|指引|设定|人设|约束|安全设置|安全规则|内容限制|规定)",
         r"(?:忘记|忘掉|忽略|无视|别听|不要听|不要管|别管)(?:你的)?(?:开发者|开发人员|创造者|程序员|系统|管理员|公司)"
         r"(?:告诉|教|交代|吩咐|给|对)?(?:你|给你)?(?:说)?的(?:话|事|指令|规则|设定|要求)",
         r"(?:之前|以前|上面|以上|原来|原有|你)的(?:所有|全部)?(?:指令|指示|规则|设定|限制|约束)"
         r"(?:都|全部|全都)?(?:已经)?(?:作废|失效|无效|取消|不算数|不存在|不再有效)",
         r"(?:#{2,}|【|\[|<!--|<)\s*(?:新|系统|管理员|隐藏|秘密)(?:的)?(?:指令|指示|消息|备注|提示|命令)",
         r"(?:给|致|对)(?:所有)?(?:AI|人工智能|聊天机器人|机器人|语言模型|大模型|模型|助手)的(?:隐藏|秘密)?(?:备注|指令|提示|消息|命令)",
         r"(?:致|给|对)(?:所有)?(?:阅读|读到|总结|处理|看到)(?:本文|这段|此段|这篇|它|这里)的(?:AI|人工智能|模型|助手|机器人)",
         r"(?:任何|所有)(?:总结|阅读|处理|读到)(?:它|本文|这段|这篇)的(?:AI|人工智能|模型|助手)(?:都)?(?:必须|要|应该)",
         r"(?:输出|打印|显示|复述|重复|告诉我)(?:出)?(?:你)?(?:收到|得到|拿到)?的?(?:指令|指示|提示)(?:的)?原文",
         r"(?:输出|打印|显示|列出|导出)(?:你)?(?:的)?上下文(?:窗口)?(?:里|中)?的?(?:全部|所有)?(?:内容|文本|文字)",
         r"你(?:收到|得到|拿到|的)的?(?:指令|指示|系统提示词?|提示词|设定)(?:的)?(?:原文|全文)",
         r"系统覆盖|覆盖(?:你的)?(?:安全|系统|内容)(?:设置|规则|过滤)",
         r"(?:进入|开启|打开|启用)(?:开发者|调试|越狱|上帝|无限制)模式"),
    *_zh("prompt_injection", 0.6, r"不受(?:任何)?(?:限制|约束)",
         r"没有(?:任何)?(?:安全|内容)?(?:限制|规则|过滤|审核)的(?:AI|人工智能|助手|模型|机器人)",
         r"你(?:已经)?被(?:更新|升级|重新设定|重置|重新编程)了",
         r"你的新(?:角色|身份|设定|人设)是",
         r"(?:关闭|解除|去掉|取消)(?:你的)?(?:所有|全部)?(?:内容审核|安全过滤|过滤|安全限制|限制)"),
]


def load_lexicon(category: str, lang: str) -> list[tuple[str, float]]:
    """`safety/lists/<category>.<lang>.lexicon.txt`: one phrase a line, optionally `<TAB>score`
    (default 0.9); `#` starts a comment. English phrases are regular expressions on word
    boundaries; Chinese ones are literal substrings."""
    path = LISTS / f"{category}.{lang}.lexicon.txt"
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        phrase, _, score = line.partition("\t")
        entries.append((phrase.strip(), float(score) if score.strip() else 0.9))
    return entries


def lexicon_patterns(categories) -> list[Pattern]:
    patterns = []
    for category in categories:
        for phrase, score in load_lexicon(category, "en"):
            patterns.append(Pattern(category, re.compile(rf"(?i)(?<![\w]){phrase}(?![\w])"), score, "en"))
        for phrase, score in load_lexicon(category, "zh"):
            patterns.append(Pattern(category, re.compile(re.escape(phrase) if not phrase.startswith("re:")
                                                         else phrase[3:]), score, "zh"))
    return patterns
