"""The LLM, reached through ai_service's /v1/chat/completions with the internal token and the caller's
identity, always classified private (learner data never goes to the cloud tier). Failures are results
(None), never exceptions: a turn never fails because the model did."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from common.auth import Caller, service_headers
from common.http import make_client
from common.logging import get_logger

log = get_logger("guided.llm")


@dataclass
class Completion:
    text: str
    finish_reason: str
    model: str
    upstream: str
    seconds: float


class LLMClient:
    def __init__(self, base_url: str, token: str, model: str, timeout: float):
        self.client = make_client(base_url, timeout)
        self.token = token
        self.model = model

    async def aclose(self) -> None:
        await self.client.aclose()

    async def complete(self, messages: list[dict], caller: Caller | None, *, max_tokens: int,
                       temperature: float = 0.3) -> Completion | None:
        headers = {**service_headers(self.token, caller), "x-data-classification": "private"}
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "metadata": {"data_classification": "private"}}
        started = time.perf_counter()
        try:
            response = await self.client.post("/v1/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("llm call failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return None
        if response.status_code != 200:
            log.warning("llm call refused", extra={"status": response.status_code, "body": response.text[:300]})
            return None
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError):
            log.warning("llm answer unreadable", extra={"body": response.text[:300]})
            return None
        return Completion(text, choice.get("finish_reason") or "", data.get("model", ""),
                          response.headers.get("x-tutorstack-upstream", ""), time.perf_counter() - started)
