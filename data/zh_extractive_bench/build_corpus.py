"""Writes corpus.jsonl, queries.jsonl and qrels/test.tsv of zh_extractive_bench: extractive,
CMRC-style Chinese questions made automatically from the repo's own Chinese course text.

A proxy for corpora such as CMRC 2018 (questions written by reading one Wikipedia passage, so
they copy most of its words and the answer is a span of it), where plain BM25 is very strong.
Every question is one clause of a passage (with the clause before it when it is short) in which
one span is replaced by a question word:

- a noun list ("论点、论据和论证") -> 哪些 (哪 before a numeral: "由哪三部分组成");
- one noun of the clause (not its first word) -> 什么;
- a clause that a causal marker (因为 / 所以 / 因此 / 才能 / 从而 ...) ties to its neighbour ->
  为什么 + the clause it explains;
- a clause that says how (用 / 通过 / 按照 ... X 来 Y) -> 如何 + the rest.

So the answer is always a span that the question no longer contains, and the rest of the
question is copied. Sources (both in this repository): data/zh_writing_bench/corpus.jsonl
(CC0 1.0; its 35 Chinese passages get questions, its 10 English ones stay as distractors) and the
Chinese part of the sample course reader, data/samples/course_reader/06-chinese-argumentative-essay.md
(Apache-2.0, one passage per section). Deterministic: the same inputs and jieba dictionary give
the same files (`python data/zh_extractive_bench/build_corpus.py`).
"""
from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import jieba
import jieba.posseg as pseg

jieba.setLogLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parents[1]
WRITING_BENCH = REPO / "data" / "zh_writing_bench" / "corpus.jsonl"
COURSE_READER = REPO / "data" / "samples" / "course_reader" / "06-chinese-argumentative-essay.md"
SEED = 13
PER_CLAUSE = 3  # questions per clause at most (different answer spans)
MIN_CONTEXT = 6  # Han characters a question keeps besides its question word

HAN = re.compile(r"[\u4e00-\u9fff]")
SENTENCE_END = "。！？"
CLAUSE_END = "，；：。！？"
CAUSAL_NEXT = ("所以", "因此", "才能", "从而", "以便", "这样", "使", "让", "便于")
HOW_START = ("用", "通过", "按照", "借助", "采用", "利用")
NOUNISH = ("n", "vn", "nz", "nr", "ns", "nt", "i", "l", "j")
SKIP_NOUNS = {"时候", "时", "方面", "部分", "内容", "东西", "问题", "情况", "之处", "一种", "方法"}


def han_count(text: str) -> int:
    return len(HAN.findall(text))


def passages() -> list[dict]:
    docs = [json.loads(line) for line in WRITING_BENCH.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = COURSE_READER.read_text(encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip()
    sections = re.split(r"^## +", text, flags=re.M)
    intro = "".join(sections[0].splitlines(keepends=True)[1:])
    parts = [(title, intro)] + [(s.splitlines()[0].strip(), "".join(s.splitlines(keepends=True)[1:]))
                                for s in sections[1:]]
    for n, (heading, body) in enumerate(parts):
        body = "".join(line.strip() for line in body.splitlines())
        if body:
            docs.append({"_id": f"cr06-{n}", "title": heading, "text": body})
    return docs


def sentences(text: str) -> list[str]:
    out, current = [], ""
    for char in text:
        current += char
        if char in SENTENCE_END:
            out.append(current)
            current = ""
    if current.strip():
        out.append(current + "。")
    return [s.strip() for s in out if han_count(s) >= 4]


def clauses(sentence: str) -> list[str]:
    """The sentence's clauses without their closing punctuation (quoted text stays whole)."""
    out, current, quoted = [], "", False
    for char in sentence:
        if char in "“「":
            quoted = True
        elif char in "”」":
            quoted = False
        if char in CLAUSE_END and not quoted:
            if current.strip():
                out.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        out.append(current.strip())
    return out


def words(clause: str) -> list[tuple[str, str]]:
    return [(w.word, w.flag) for w in pseg.cut(clause)]


def is_noun(word: str, flag: str) -> bool:
    return flag.startswith(NOUNISH) and han_count(word) >= 2 and word not in SKIP_NOUNS


def list_span(tokens: list[tuple[str, str]]) -> tuple[int, int] | None:
    """The first run noun (、 noun)* (和|或|与 noun): start and end token positions."""
    for start, (word, flag) in enumerate(tokens):
        if not is_noun(word, flag):
            continue
        end, items = start, 1
        while end + 2 < len(tokens) and tokens[end + 1][0] in {"、", "和", "或", "与", "及"} \
                and tokens[end + 2][1].startswith(NOUNISH) and han_count(tokens[end + 2][0]) >= 1:
            end += 2
            items += 1
        if items >= 3 or (items == 2 and any(t[0] == "、" for t in tokens[start:end + 1])):
            return noun_phrase(tokens, start, end)
    return None


def noun_phrase(tokens, start: int, end: int) -> tuple[int, int]:
    """Widens [start, end] over the nouns written next to it ("中心" + "论点", "历史" + "事件")."""
    while start > 0 and tokens[start - 1][1].startswith(NOUNISH) and HAN.search(tokens[start - 1][0]):
        start -= 1
    while end + 1 < len(tokens) and tokens[end + 1][1].startswith(NOUNISH) and HAN.search(tokens[end + 1][0]):
        end += 1
    return start, end


def question_list(tokens) -> str | None:
    span = list_span(tokens)
    if span is None:
        return None
    start, end = span
    after = tokens[end + 1] if end + 1 < len(tokens) else ("", "")
    word = "哪" if after[1] == "m" else "哪些"
    if after[1] == "m" and after[0].startswith(("两", "三", "四", "五", "六", "七", "八", "几")):
        word = "哪"
    return "".join(w for w, _ in tokens[:start]) + word + "".join(w for w, _ in tokens[end + 1:])


def question_what(tokens, rng: random.Random, count: int) -> list[str]:
    """Up to `count` questions, each with one noun phrase (not the clause's first) -> 什么."""
    spans = list(dict.fromkeys(noun_phrase(tokens, i, i) for i, (w, f) in enumerate(tokens) if is_noun(w, f)))
    spans = [(a, b) for a, b in spans if a > 0]
    rng.shuffle(spans)
    return ["".join(w for w, _ in tokens[:a]) + "什么" + "".join(w for w, _ in tokens[b + 1:])
            for a, b in sorted(spans[:count])]


def question_how(clause: str, tokens) -> str | None:
    """"用X来Y" / "通过X，Y" -> "如何Y"; "用X表达" -> "如何表达"."""
    if not clause.startswith(HOW_START):
        return None
    for i, (word, _) in enumerate(tokens):
        if i > 0 and word in {"来", "去"} and i + 1 < len(tokens):
            return "如何" + "".join(w for w, _ in tokens[i + 1:])
    verbs = [i for i, (_, f) in enumerate(tokens) if i > 1 and f.startswith("v")]
    return "如何" + "".join(w for w, _ in tokens[verbs[-1]:]) if verbs else None


def with_context(previous: str | None, question: str) -> str:
    """Short questions keep the clause before them, as CMRC questions carry their context."""
    if previous and han_count(question) < MIN_CONTEXT + 4:
        return f"{previous}，{question}"
    return question


def questions_for(doc: dict, rng: random.Random) -> list[str]:
    out = []
    for sentence in sentences(doc["text"]):
        parts = clauses(sentence)
        for n, clause in enumerate(parts):
            previous = parts[n - 1] if n > 0 else None
            following = parts[n + 1] if n + 1 < len(parts) else None
            tokens = words(clause)
            made: list[str] = []
            if following and following.startswith(CAUSAL_NEXT):
                made.append("为什么" + re.sub(r"^(因为|由于|并且|并|而且|也)", "", clause))
            if clause.startswith(("因为", "由于")) and following:
                made.append("为什么" + following)
            how = question_how(clause, tokens)
            if how:
                made.append(with_context(previous, how))
            listed = question_list(tokens)
            if listed:
                made.append(with_context(previous, listed))
            made.extend(with_context(previous, what) for what in question_what(tokens, rng, PER_CLAUSE))
            good = [q for q in made if han_count(q) - 2 >= MIN_CONTEXT]
            for q in good[:PER_CLAUSE]:
                out.append(q.rstrip("，；： ") + "？")
    return out


def main() -> None:
    rng = random.Random(SEED)
    docs = passages()
    (ROOT / "qrels").mkdir(exist_ok=True)
    seen: dict[str, str] = {}
    rows = []
    for doc in docs:
        if han_count(doc["text"]) < 0.3 * len(doc["text"]):
            continue  # English passages: distractors only
        for question in questions_for(doc, rng):
            if question in seen:  # the same words from two passages: ambiguous, dropped
                if seen[question] != doc["_id"]:
                    rows = [r for r in rows if r[1] != question]
                continue
            seen[question] = doc["_id"]
            rows.append((doc["_id"], question))
    with open(ROOT / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for doc in docs:
            corpus.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(ROOT / "queries.jsonl", "w", encoding="utf-8") as queries, \
            open(ROOT / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n, (doc_id, question) in enumerate(rows, start=1):
            queries.write(json.dumps({"_id": f"x{n:03d}", "text": question}, ensure_ascii=False) + "\n")
            qrels.write(f"x{n:03d}\t{doc_id}\t1\n")
    print(f"{len(docs)} passages, {len(rows)} questions")


if __name__ == "__main__":
    main()
