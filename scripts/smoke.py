#!/usr/bin/env python3
"""`make smoke`: the README's curl checks against a running platform; exits 1 on any failure.

Standard library only, so ops can copy it to any host with Python 3.8+:

    GATEWAY_URL=https://tutor.example.org API_KEY=sk-... python3 scripts/smoke.py

GATEWAY_URL  the gateway (default http://localhost:8080)
API_KEY      an API key (default: the key `make run` keeps in .tutorstack/dev-api-key)
SMOKE_TIMEOUT  seconds per request (default 120: the embedded CPU model is slow)
SMOKE_MAX_TOKENS  tokens per generated answer (default 16)

Checks: /healthz; /readyz; the tutor chat (/v1/chat, 200 with content); /v1/models; the
OpenAI-style /v1/chat/completions, plain and streamed; 401 without a key; /v1/health (the
platform's health report: fails when a core service is down).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Failed(Exception):
    pass


class Smoke:
    def __init__(self, base: str, key: str, timeout: float, max_tokens: int):
        self.base = base.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.rows: list[tuple[str, bool, int | None, float, str]] = []
        self.model = ""

    def request(self, method: str, path: str, body: dict | None = None, *, key: str | None = "default"):
        headers = {"accept": "application/json"}
        if key == "default":
            key = self.key
        if key:
            headers["authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers or {})

    def check(self, name: str, fn) -> None:
        started = time.perf_counter()
        status = None
        try:
            status, detail = fn()
            ok = True
        except Failed as exc:
            ok, detail = False, str(exc)
            status = getattr(exc, "status", None)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            ok, detail = False, f"unexpected answer: {type(exc).__name__}: {exc}"
        elapsed = (time.perf_counter() - started) * 1000
        self.rows.append((name, ok, status, elapsed, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name:34} {str(status or '-'):>4} {elapsed:9.0f} ms  {detail}"[:200],
              flush=True)

    @staticmethod
    def expect(status: int, wanted: int, text: str) -> None:
        if status != wanted:
            exc = Failed(f"HTTP {status} (wanted {wanted}): {text[:120]}")
            exc.status = status
            raise exc

    # --- the checks --------------------------------------------------------------------------
    def healthz(self):
        status, text, _ = self.request("GET", "/healthz", key=None)
        self.expect(status, 200, text)
        return status, json.loads(text).get("status", "")

    def readyz(self):
        status, text, _ = self.request("GET", "/readyz", key=None)
        self.expect(status, 200, text)
        body = json.loads(text)
        return status, body.get("status", "") + (f" (degraded: {', '.join(body['degraded'])})" if body.get("degraded") else "")

    def tutor_chat(self):
        status, text, _ = self.request("POST", "/v1/chat", {
            "mode": "tutor", "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": "How do I write a thesis statement?"}]})
        self.expect(status, 200, text)
        content = _content(json.loads(text))
        if not content.strip():
            raise Failed("200 but the answer is empty")
        return status, repr(content[:60])

    def models(self):
        status, text, _ = self.request("GET", "/v1/models")
        self.expect(status, 200, text)
        data = json.loads(text)["data"]
        if not data:
            raise Failed("no models listed")
        self.model = data[0]["id"]
        return status, f"{len(data)} model(s): {', '.join(m['id'] for m in data[:4])}"

    def completions(self):
        status, text, _ = self.request("POST", "/v1/chat/completions", {
            "model": self.model, "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": "Say hello to a student."}]})
        self.expect(status, 200, text)
        body = json.loads(text)
        content = _content(body)
        if body.get("object") != "chat.completion" or not content.strip():
            raise Failed(f"not a chat.completion with content: {text[:120]}")
        return status, f"{body.get('model')}: {content[:50]!r}"

    def completions_stream(self):
        status, text, headers = self.request("POST", "/v1/chat/completions", {
            "model": self.model, "max_tokens": self.max_tokens, "stream": True,
            "messages": [{"role": "user", "content": "Name one punctuation mark."}]})
        self.expect(status, 200, text)
        events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        if not events or events[-1] != "[DONE]":
            raise Failed(f"no SSE stream ending in [DONE]: {text[:120]}")
        chunks = [json.loads(e) for e in events[:-1]]
        content = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks)
        if not content.strip():
            raise Failed(f"{len(chunks)} chunks, no content")
        return status, f"{len(chunks)} chunks: {content[:40]!r}"

    def no_key(self):
        status, text, _ = self.request("GET", "/v1/models", key=None)
        self.expect(status, 401, text)
        if "error" not in json.loads(text):
            raise Failed("401 without an OpenAI-shaped error body")
        return status, json.loads(text)["error"].get("code") or "401"

    def health(self):
        status, text, _ = self.request("GET", "/v1/health")
        self.expect(status, 200, text)
        body = json.loads(text)
        not_up = [f"{s['name']} {s['status']}" for s in body["services"] if s["status"] != "up"]
        detail = f"platform {body['status']}" + (f" ({', '.join(not_up)})" if not_up else "")
        if body["status"] == "down":
            exc = Failed(detail)
            exc.status = status
            raise exc
        return status, detail

    def run(self) -> int:
        print(f"smoke tests against {self.base}", flush=True)
        print(f"{'':6}{'check':34} {'HTTP':>4} {'time':>12}  detail", flush=True)
        self.check("GET /healthz", self.healthz)
        self.check("GET /readyz", self.readyz)
        self.check("GET /v1/models", self.models)
        self.check("POST /v1/chat (tutor)", self.tutor_chat)
        self.check("POST /v1/chat/completions", self.completions)
        self.check("POST /v1/chat/completions stream", self.completions_stream)
        self.check("GET /v1/models without a key: 401", self.no_key)
        self.check("GET /v1/health", self.health)
        failed = [r[0] for r in self.rows if not r[1]]
        total = sum(r[3] for r in self.rows) / 1000
        print(f"{len(self.rows) - len(failed)}/{len(self.rows)} passed in {total:.1f}s"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
        return 1 if failed else 0


def _content(body: dict) -> str:
    return body["choices"][0]["message"].get("content") or ""


def main() -> int:
    key = os.environ.get("API_KEY", "")
    key_file = ROOT / ".tutorstack" / "dev-api-key"
    if not key and key_file.is_file():
        key = key_file.read_text().strip()
    if not key:
        print("smoke: set API_KEY (or run `make run` once, which writes .tutorstack/dev-api-key)", file=sys.stderr)
        return 2
    smoke = Smoke(os.environ.get("GATEWAY_URL", "http://localhost:8080"), key,
                  float(os.environ.get("SMOKE_TIMEOUT", "120")), int(os.environ.get("SMOKE_MAX_TOKENS", "16")))
    return smoke.run()


if __name__ == "__main__":
    sys.exit(main())
