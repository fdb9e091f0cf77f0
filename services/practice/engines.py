"""Reply engines: the persona's next line. Two implementations behind one interface.

- RulesEngine: keyword intent of the trainee's last turn -> the persona's template for it; open questions
  and reflections unlock the next thing the persona is willing to disclose (good helping is rewarded),
  advice meets a "yes, but". Deterministic and instant: the baseline and the fallback.
- LlmEngine: a short, concrete persona prompt sent through ai_service's normal routing (classification
  private, the `peer` adapter family when one is loaded), within a time budget; every reply is checked
  (no AI talk, the persona's language, sane length, not talking like the tutor) and regenerated once,
  otherwise the caller falls back to rules.
No FastAPI here; the service module wires them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from services.practice.keyword_intents import keyword_intent
from services.practice.personas import Persona

Message = dict  # {"role": "user"|"assistant", "content": str}

AI_TALK = re.compile(r"\b(as an ai|an ai\b|ai (language )?model|language model|i am an assistant|i'm an assistant|"
                     r"as a (helpful )?assistant|i'm just an ai|openai|chatgpt)|作为(一个)?(ai|人工智能)|人工智能|语言模型",
                     re.I)
TUTOR_TALK = re.compile(r"\b(here are some tips|here are a few tips|i can help you|how can i help|i'd be happy to help|"
                        r"as your tutor|let me help you)\b", re.I)
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
MAX_REPLY_CHARS = 600


def language_of(text: str) -> str:
    cjk, latin = len(CJK.findall(text)), len(LATIN.findall(text))
    if cjk == 0 and latin == 0:
        return "unknown"
    return "zh" if cjk >= latin / 3 else "en"


@dataclass
class CharacterCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    mentions_problem: bool = False
    no_ai_talk: bool = True
    language_kept: bool = True


def check_in_character(persona: Persona, reply: str, *, require_problem: bool = False) -> CharacterCheck:
    """The automatic in-character check (also what bench_practice.py reports)."""
    problems = []
    text = reply.strip()
    no_ai = not AI_TALK.search(text)
    if not no_ai:
        problems.append("ai_talk")
    language_kept = language_of(text) == persona.language
    if not language_kept:
        problems.append("language")
    mentions = persona.mentions_problem(text)
    if require_problem and not mentions:
        problems.append("problem_not_mentioned")
    if len(text) < 2:
        problems.append("empty")
    if TUTOR_TALK.search(text):
        problems.append("tutor_talk")
    return CharacterCheck(not problems, problems, mentions, no_ai, language_kept)


def tidy_reply(text: str) -> str:
    """Trim what the small model rambles on with: role labels, a second speaker, too many sentences."""
    text = text.strip().strip('"').strip()
    text = re.sub(r"^\s*(\*\*)?[A-Z][\w .()]{0,30}:\s*", "", text) if re.match(r"^\s*\S{1,30}:\s", text) else text
    text = re.split(r"\n\s*(tutor|trainee|peer tutor|user|helper|student)\s*:", text, flags=re.I)[0]
    sentences = re.split(r"(?<=[.!?。！？])\s*", text)
    kept = "".join(s if s.endswith(("。", "！", "？")) else s + " " for s in sentences[:4] if s).strip()
    return kept[:MAX_REPLY_CHARS].strip()


@dataclass
class EngineReply:
    text: str
    engine: str  # the engine that produced the text: "rules" or "llm"
    model: str | None = None
    fallback_reason: str | None = None
    attempts: int = 1
    latency_ms: float = 0.0


class ReplyEngine(Protocol):
    name: str

    async def reply(self, persona: Persona, messages: list[Message], *, caller_headers: dict[str, str],
                    session_id: str) -> EngineReply: ...


def _stable_index(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % max(n, 1)


def intent_group(label: str) -> str:
    return "reflection" if label.endswith("reflection") else label


class RulesEngine:
    name = "rules"

    def reply_text(self, persona: Persona, messages: list[Message]) -> str:
        trainee_turns = [m["content"] for m in messages if m["role"] == "user"]
        last = trainee_turns[-1] if trainee_turns else ""
        # How much the persona has opened up: one disclosure per earlier open question or reflection.
        opened = sum(1 for turn in trainee_turns[:-1]
                     if intent_group(keyword_intent(turn)) in ("open_question", "reflection"))
        group = intent_group(keyword_intent(last))
        templates = persona.replies[group]
        if group in ("open_question", "reflection"):
            if opened >= len(persona.will_disclose):
                templates = persona.replies["exhausted"]
                return templates[_stable_index(last, len(templates))]
            disclosure = persona.will_disclose[opened]
            template = templates[_stable_index(last, len(templates))]
            return template.format(disclosure=disclosure)
        return templates[_stable_index(last, len(templates))].replace("{disclosure}", "").strip()

    async def reply(self, persona: Persona, messages: list[Message], *, caller_headers: dict[str, str] | None = None,
                    session_id: str = "") -> EngineReply:
        started = time.perf_counter()
        text = self.reply_text(persona, messages)
        return EngineReply(text, "rules", latency_ms=(time.perf_counter() - started) * 1000)


def persona_prompt(persona: Persona) -> str:
    """Short and concrete, with the persona's own opening as an example of how they talk: on 30 trial
    openings this form kept SmolLM2-135M in character about twice as often as a longer description."""
    if persona.language == "zh":
        return (f"角色扮演。你是{persona.name}，一个来写作中心求助的学生。你的问题是：{persona.problem}。"
                f"{persona.problem_summary}。你的心情：{persona.emotional_state}。用户是辅导员。"
                f"请以{persona.name}的身份，用第一人称、用中文回答辅导员，只说一两句话，并说到你的问题。"
                f"你说话的样子：“{persona.opening}”")
    return (f"Role-play. You are {persona.name}, a student who came to the writing centre for help. "
            f"Your problem is {persona.problem}: {persona.problem_summary}. You feel {persona.emotional_state}. "
            f"The user is the tutor. Answer the tutor as {persona.name}, in the first person, in one or two short "
            f"sentences, and say something about your {persona.problem}. Example of how you talk: "
            f"\"{persona.opening}\"")


class LlmUnavailable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LlmEngine:
    """Calls ai_service's /v1/chat/completions; raises LlmUnavailable with a reason when it cannot serve."""

    name = "llm"

    def __init__(self, client: httpx.AsyncClient, token: str, *, adapter_family: str = "peer", max_tokens: int = 60,
                 budget_sec: float = 12.0, temperature: float = 0.7, max_attempts: int = 2, model_list_ttl: float = 30):
        self.client = client
        self.token = token
        self.adapter_family = adapter_family
        self.max_tokens = max_tokens
        self.budget_sec = budget_sec
        self.temperature = temperature
        self.max_attempts = max_attempts
        self.model_list_ttl = model_list_ttl
        self._model: str | None = None
        self._model_checked = 0.0

    async def model(self, headers: dict[str, str]) -> str:
        """The adapter family when a version of it is loaded, else '' (the base model)."""
        if not self.adapter_family:
            return ""
        if self._model is None or time.monotonic() - self._model_checked > self.model_list_ttl:
            try:
                response = await self.client.get("/v1/models", headers=headers, timeout=3.0)
                ids = [m.get("id", "") for m in response.json().get("data", [])] if response.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                ids = []
            family = re.compile(rf"^{re.escape(self.adapter_family)}(-v\d+)?$")
            self._model = self.adapter_family if any(family.match(i) for i in ids) else ""
            self._model_checked = time.monotonic()
        return self._model

    def build_messages(self, persona: Persona, messages: list[Message]) -> list[Message]:
        history = [m for m in messages if m["role"] in ("user", "assistant")]
        if not history or history[0]["role"] != "assistant":
            history = [{"role": "assistant", "content": persona.opening}, *history]
        return [{"role": "system", "content": persona_prompt(persona)}, *history[-8:]]

    async def reply(self, persona: Persona, messages: list[Message], *, caller_headers: dict[str, str],
                    session_id: str = "") -> EngineReply:
        started = time.perf_counter()
        deadline = started + self.budget_sec
        headers = {**caller_headers, "x-data-classification": "private"}
        model = await self.model(headers)
        prompt = self.build_messages(persona, messages)
        first_turn = sum(1 for m in messages if m["role"] == "user") == 1
        problems: list[str] = []
        for attempt in range(1, self.max_attempts + 1):
            remaining = deadline - time.perf_counter()
            if remaining <= 0.5:
                raise LlmUnavailable(f"time_budget_exceeded ({self.budget_sec:g}s)")
            body = {"model": model, "messages": prompt, "max_tokens": self.max_tokens,
                    "temperature": self.temperature if attempt == 1 else min(1.0, self.temperature + 0.2),
                    "seed": _stable_index(f"{session_id}:{len(messages)}:{attempt}", 2**31),
                    "metadata": {"data_classification": "private"}}
            try:
                response = await asyncio.wait_for(
                    self.client.post("/v1/chat/completions", json=body, headers=headers, timeout=remaining),
                    timeout=remaining)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                raise LlmUnavailable(f"time_budget_exceeded ({self.budget_sec:g}s)") from None
            except httpx.HTTPError as exc:
                raise LlmUnavailable(f"llm_unreachable ({type(exc).__name__})") from exc
            if response.status_code != 200:
                code = ""
                try:
                    code = response.json().get("error", {}).get("code") or ""
                except ValueError:
                    pass
                raise LlmUnavailable(f"llm_error ({response.status_code}{' ' + code if code else ''})")
            try:
                raw = response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise LlmUnavailable("llm_bad_response") from None
            text = tidy_reply(raw)
            check = check_in_character(persona, text, require_problem=first_turn)
            if check.ok:
                return EngineReply(text, "llm", model=response.json().get("model") or model or None, attempts=attempt,
                                   latency_ms=(time.perf_counter() - started) * 1000)
            problems = check.problems
        raise LlmUnavailable(f"out_of_character ({', '.join(problems)})")
