"""RAG chat end to end: gateway -> ai_service -> graphrag (index of the sample course reader)
and the real vLLM. Citations must resolve to real lines of real files in the repo."""

from __future__ import annotations

import json
import re
import httpx
import pytest

from tests.support.processes import REPO_ROOT, free_port
from tests.support.stack import GRAPHRAG_TOKEN, start_platform

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What makes a thesis statement strong? Answer in two sentences and cite "
                                        "the passage you used like [1]."}]


def post(stack, path: str, body: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}{path}", json=body, timeout=180,
                      headers={"Authorization": f"Bearer {key or stack.api_key}"})


def assert_resolves(citation: dict) -> None:
    """The citation names a file in the repo, a line range inside it, and text from those lines."""
    path = REPO_ROOT / citation["path"]
    assert path.is_file(), citation
    lines = path.read_text(encoding="utf-8").splitlines()
    assert 1 <= citation["start_line"] <= citation["end_line"] <= len(lines), citation
    cited = " ".join(" ".join(lines[citation["start_line"] - 1: citation["end_line"]]).split())
    first_words = " ".join(citation["snippet"].removesuffix("…").split()[:6])
    assert first_words and _words(first_words) in _words(cited), (first_words, cited[:300])


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def test_tutor_rag_answers_with_citations_that_resolve(stack):
    response = post(stack, "/v1/chat", {"mode": "tutor_rag", "messages": QUESTION, "max_tokens": 120,
                                        "temperature": 0, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-tutorstack-retrieval"] == "ok"
    assert body["retrieval"]["status"] == "ok" and body["retrieval"]["mode"] == "graph"
    sources = body["sources"]
    assert 1 <= len(sources) <= 3 and [s["number"] for s in sources] == list(range(1, len(sources) + 1))
    assert any(s["path"].endswith("02-thesis-statements.md") for s in sources)
    for source in sources:
        assert_resolves(source)
    # Every [n] left in the answer is a citation, and every citation is a retrieved source.
    # The answer cites (its own [n], or sentences matched to the passages they repeat), every
    # [n] left in the text is a citation, and every citation is a retrieved source.
    text = body["choices"][0]["message"]["content"]
    markers = {int(n) for n in re.findall(r"\[(\d{1,3})\]", text)}
    assert body["citations"] and body["citations_from"] in ("model", "matched")
    assert markers == {c["number"] for c in body["citations"]}
    by_number = {s["number"]: s for s in sources}
    for citation in body["citations"]:
        assert citation == by_number[citation["number"]]


def test_chat_hybrid_streams_and_ends_with_citations(stack):
    body = {"messages": QUESTION, "max_tokens": 60, "temperature": 0, "top_k": 3, "stream": True}
    with httpx.stream("POST", f"{stack.gateway_url}/v1/chat/hybrid", json=body, timeout=180,
                      headers={"Authorization": f"Bearer {stack.api_key}"}) as response:
        assert response.status_code == 200
        assert response.headers["x-tutorstack-retrieval"] == "ok"
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    trailer = json.loads(events[-2])
    assert trailer["retrieval"]["mode"] == "hybrid" and trailer["retrieval"]["status"] == "ok"
    assert trailer["mode"] == "tutor" and trailer["sources"]
    for source in trailer["sources"]:
        assert_resolves(source)
    text_chunks = [json.loads(e) for e in events[:-2]]
    assert len([c for c in text_chunks if c.get("choices")]) > 2  # streamed chunk by chunk


def test_rag_chat_still_answers_when_graphrag_is_down_and_readiness_says_so(stack, session_dir):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    platform = start_platform(session_dir / "no-graphrag", stack.redis_url, local_url=stack.vllm_url,
                              local_api_key="test-vllm-key", graphrag_url=dead)
    try:
        key = platform.create_key("rag-down")
        response = httpx.post(f"{platform.gateway_url}/v1/chat", timeout=180,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"mode": "tutor_rag", "messages": QUESTION, "max_tokens": 24})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"].strip()
        assert body["retrieval"]["status"] == "unavailable" and "without course passages" in body["retrieval"]["detail"]
        assert body["citations"] == [] and body["sources"] == []
        ready = httpx.get(f"{platform.ai_service_url}/readyz").json()
        assert ready["status"] == "ready" and "graphrag" in ready["degraded"]
    finally:
        platform.stop()


def test_unknown_rag_mode_lists_the_valid_ones(stack):
    response = post(stack, "/v1/chat", {"mode": "poet_rag", "messages": QUESTION})
    assert response.status_code == 400
    assert "tutor_rag" in response.json()["error"]["message"]


def test_the_index_holds_the_sample_course_reader_with_dense_vectors(stack):
    assert httpx.get(f"{stack.graphrag_url}/v1/index").status_code == 401  # the corpus is not open to anyone
    index = httpx.get(f"{stack.graphrag_url}/v1/index", headers={"x-tutorstack-service-token": GRAPHRAG_TOKEN}).json()
    shipped = sorted(p.name for p in (REPO_ROOT / "data/samples/course_reader").glob("*.md"))
    assert index["stats"]["files"] == len(shipped) and index["stats"]["chunks"] > len(shipped)
    assert index["embedding"]  # hybrid has its dense leg

