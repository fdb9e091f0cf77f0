"""The LLM part: a few extra issues with suggestions, under a JSON schema (vLLM structured output), within a
strict time budget. Everything it returns is validated: a quote must occur in the text (it is re-located, by exact
then whitespace/case-insensitive search) or the item is dropped; a failed or invalid generation is retried once
while time remains, then the caller answers with the deterministic parts and `degraded: true`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

import httpx

from services.writing.metrics import Issue

LLM_TYPES = ("content", "organization", "evidence", "style", "grammar")
SCHEMA = {
    "type": "object",
    "properties": {
        "issues": {
            "type": "array", "minItems": 1, "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "quote": {"type": "string", "minLength": 3, "maxLength": 50},
                    "type": {"type": "string", "enum": list(LLM_TYPES)},
                    "suggestion": {"type": "string", "minLength": 8, "maxLength": 90},
                },
                "required": ["quote", "type", "suggestion"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["issues"],
    "additionalProperties": False,
}


class LlmFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class LlmResult:
    issues: list[Issue] = field(default_factory=list)
    model: str | None = None
    attempts: int = 0
    dropped: int = 0


def locate(content: str, quote: str, taken: set[tuple[int, int]] | None = None) -> tuple[int, int] | None:
    """Where `quote` occurs in content: exact first, then ignoring case and runs of whitespace. None if absent."""
    quote = quote.strip().strip("\"'“”")
    if len(quote) < 2:
        return None
    start = content.find(quote)
    if start >= 0:
        return start, start + len(quote)
    parts = [re.escape(p) for p in quote.split()]
    if not parts:
        return None
    m = re.search(r"\s+".join(parts), content, re.IGNORECASE)
    return (m.start(), m.end()) if m else None


def loads_lenient(text: str):
    """json.loads, or, for output cut at max_tokens, the same text with its open string/containers closed."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    stack, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    repaired = text + ('"' if in_string else "") + "".join(reversed(stack))
    return json.loads(repaired)  # raises ValueError when it cannot be repaired


def validate(content: str, payload: dict, lang: str) -> tuple[list[Issue], int]:
    issues, dropped, seen = [], 0, set()
    for item in payload.get("issues") or []:
        if not isinstance(item, dict):
            dropped += 1
            continue
        span = locate(content, str(item.get("quote", "")))
        suggestion = " ".join(str(item.get("suggestion", "")).split())
        kind = item.get("type") if item.get("type") in LLM_TYPES else "style"
        if span is None or span in seen or len(suggestion) < 8:
            dropped += 1
            continue
        seen.add(span)
        message = "Reviewer note (LLM)" if lang != "zh" else "评阅提示（LLM）"
        issues.append(Issue(kind, "low", span[0], span[1], message, suggestion, source="llm"))
    return issues, dropped


def _prompt(content: str, writing_type: str, lang: str, weakest: list[str], assignment: str | None) -> list[dict]:
    excerpt = content[:1500]
    language = "Chinese" if lang == "zh" else "English"
    system = ("You review student writing. Reply with JSON only. Quote short phrases copied exactly from the text, "
              f"and write each suggestion in {language}.")
    user = (f"Writing type: {writing_type}. Weakest areas: {', '.join(weakest)}.\n"
            + (f"Assignment: {assignment[:300]}\n" if assignment else "")
            + f"Text:\n{excerpt}\n\nGive 1 issue: a short exact quote (a few words), its type, and a concrete suggestion.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class LlmReviewer:
    def __init__(self, client: httpx.AsyncClient, *, budget_sec: float, max_tokens: int, attempts: int = 2,
                 model: str = ""):
        self.client = client
        self.budget_sec = budget_sec
        self.max_tokens = max_tokens
        self.attempts = attempts
        self.model = model

    async def review(self, content: str, *, writing_type: str, lang: str, weakest: list[str], assignment: str | None,
                     headers: dict[str, str], budget_sec: float | None = None) -> LlmResult:
        deadline = time.monotonic() + (budget_sec if budget_sec is not None else self.budget_sec)
        body = {"model": self.model, "messages": _prompt(content, writing_type, lang, weakest, assignment),
                "max_tokens": self.max_tokens, "temperature": 0.2,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "writing_issues", "schema": SCHEMA, "strict": True}}}
        headers = {**headers, "x-data-classification": "private"}
        result, last = LlmResult(), "not attempted"
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining < 0.3:
                last = last if attempt else "no time left for the LLM"
                break
            result.attempts = attempt + 1
            try:
                response = await asyncio.wait_for(
                    self.client.post("/v1/chat/completions", json=body, headers=headers, timeout=remaining),
                    timeout=remaining)
                if response.status_code != 200:
                    last = f"ai_service answered {response.status_code}"
                    continue
                data = response.json()
                text = data["choices"][0]["message"].get("content") or ""
                payload = loads_lenient(text)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last = f"LLM timed out (budget {self.budget_sec:g} s)"
                continue
            except httpx.HTTPError as exc:
                last = f"ai_service unreachable: {type(exc).__name__}"
                continue
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"invalid LLM output: {type(exc).__name__}"
                continue
            result.issues, result.dropped = validate(content, payload, lang)
            result.model = data.get("model") or self.model or "local"
            return result
        raise LlmFailed(last)
