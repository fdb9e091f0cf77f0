"""Trust and speed at the edge, over the real stack (gateway -> ai_service -> fault proxy -> vLLM):
the README's first curl always answers, slow-but-progressing answers are not timeouts, the
breaker opens and closes, upstream refusals are the platform's errors, RAG survives pasted
essays, and bad input never becomes a 500."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time

import httpx
import pytest

from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration

BASE_MODEL = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "Give me one tip for writing a clear thesis statement."}]


def readme_curl_body() -> bytes:
    """The -d body of the README's first chat curl, byte for byte."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"curl localhost:8080/v1/chat .*?-d '(\{.*?\})'", readme, re.S)
    assert match, "the README's first curl to /v1/chat is gone"
    return match.group(1).encode()


def post(stack, path, body=None, key=None, timeout=180, **kwargs):
    return httpx.post(f"{stack.gateway_url}{path}", timeout=timeout,
                      headers={"authorization": f"Bearer {key or stack.api_key}", **kwargs.pop("headers", {})},
                      **({"json": body} if body is not None else {}), **kwargs)


def openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def ai_metric(stack, name: str, **labels) -> float:
    text = httpx.get(f"{stack.ai_service_url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the first curl ----------------------------------------------------------------------------

def test_the_readme_curl_answers_20_times_out_of_20(stack):
    """Exactly the README's curl (-d, so form-urlencoded, no max_tokens) twenty times, eight at a
    time as a class of students would: every one answers with text."""
    body = readme_curl_body()
    assert b'"mode":"tutor"' in body and b"max_tokens" not in body

    def one(_):
        started = time.monotonic()
        response = httpx.post(f"{stack.gateway_url}/v1/chat", content=body, timeout=300,
                              headers={"Authorization": f"Bearer {stack.api_key}",
                                       "Content-Type": "application/x-www-form-urlencoded"})
        return response, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(20)))
    for response, _ in results:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"].strip()
    # The mode's default max_tokens bounds every answer.
    assert max(r.json()["usage"]["completion_tokens"] for r, _ in results) <= 256


def test_a_slow_but_progressing_answer_is_not_a_timeout(faults):
    # Every chunk 0.5 s apart: about 16 s for 32 tokens, beyond the stack's 12 s local timeout, but
    # never 12 s without progress. It must be served by the local tier and not count as a failure.
    faults.local_proxy.set_mode("slow", chunk_delay=0.5)
    failures_before = ai_metric(faults, "tutorstack_upstream_requests_total", upstream="local", outcome="timeout")
    started = time.monotonic()
    response = post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 32,
                                                     "min_tokens": 32, "temperature": 0})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-tutorstack-upstream"] == "local"
    assert response.json()["usage"]["completion_tokens"] == 32
    assert elapsed > 12  # really slower than LLM_LOCAL_TIMEOUT_SEC=12, and still served
    assert ai_metric(faults, "tutorstack_upstream_requests_total", upstream="local", outcome="timeout") == failures_before


def test_a_stall_after_the_first_chunk_falls_back_for_json_clients_and_ends_streams_in_band(faults):
    faults.local_proxy.set_mode("stall_after_first_chunk")
    response = post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 16},
                    key=faults.public_api_key)
    assert response.status_code == 200, response.text
    assert response.headers["x-tutorstack-upstream"] == "cloud"  # nothing had reached the client: fall back
    with httpx.stream("POST", f"{faults.gateway_url}/v1/chat/completions", timeout=60,
                      json={"model": BASE_MODEL, "messages": HELLO, "max_tokens": 16, "stream": True},
                      headers={"authorization": f"Bearer {faults.api_key}"}) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "upstream_stream_interrupted" and "progress" in error["message"]


def test_the_breaker_opens_and_closes_end_to_end(faults):
    # A success first: earlier tests' failures must not count towards this one's threshold.
    assert post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 2}).status_code == 200
    faults.local_proxy.kill()
    codes = [openai_error(post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO,
                                                                  "max_tokens": 4}), 503)["code"] for _ in range(4)]
    # CIRCUIT_FAILURE_THRESHOLD=3: three refused connections, then the circuit is open.
    assert codes == ["upstream_connect_error"] * 3 + ["upstream_circuit_open"]
    faults.local_proxy.revive()
    time.sleep(1.2)  # CIRCUIT_RESET_SEC=1: half-open, one trial goes through and closes it
    trial = post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 4})
    assert trial.status_code == 200, trial.text
    after = post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 4})
    assert after.status_code == 200 and after.headers["x-tutorstack-upstream"] == "local"


@pytest.mark.parametrize("mode,status,code", [("error401", 502, "upstream_auth_error"),
                                              ("error429", 503, "upstream_rate_limited")])
def test_upstream_refusals_are_reported_as_the_platforms_problem(faults, mode, status, code):
    faults.local_proxy.set_mode(mode)
    error = openai_error(post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO,
                                                                "max_tokens": 4}), status)
    assert error["code"] == code and error["type"] != "authentication_error"


def test_no_private_request_reaches_the_cloud_whatever_the_local_fault(faults):
    for mode in ("error500", "error401", "error429", "stall_after_first_chunk"):
        faults.local_proxy.set_mode(mode)
        before = faults.cloud_proxy.requests_seen
        response = post(faults, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO, "max_tokens": 4},
                        timeout=60)
        # Refused, or (a stall after a first chunk that already held the whole short answer) served
        # locally; never by the cloud.
        assert response.status_code >= 500 or response.headers["x-tutorstack-upstream"] == "local", (mode, response.text)
        assert faults.cloud_proxy.requests_seen == before, mode
        faults.local_proxy.set_mode("pass")
        time.sleep(1.2)  # let the breaker half-open again between faults


# --- retrieval ---------------------------------------------------------------------------------

def test_rag_retrieves_for_a_pasted_essay_far_over_graphrag_query_limit(stack):
    essay = " ".join(["A thesis statement must make an arguable claim about the topic and preview the reasons."] * 80)
    question = f"Here is my essay:\n\n{essay}\n\nIs my thesis statement strong enough? What should I change?"
    assert len(question) > 4000
    response = post(stack, "/v1/chat", {"mode": "tutor_rag", "max_tokens": 24,
                                        "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["retrieval"]["status"] == "ok" and body["sources"]
    assert any("thesis" in s["path"] for s in body["sources"])


def test_citations_from_says_whether_the_model_cited(faults):
    """The answer is scripted at the fault proxy, so the test knows what the model wrote."""
    faults.local_proxy.set_mode("script", script="A strong thesis makes one arguable claim [1]. See also [9].")
    body = post(faults, "/v1/chat", {"mode": "tutor_rag", "top_k": 3, "messages": [
        {"role": "user", "content": "What makes a thesis statement strong?"}]}).json()
    assert body["citations_from"] == "model"
    assert [c["number"] for c in body["citations"]] == [1]
    assert "[9]" not in body["choices"][0]["message"]["content"]  # a marker pointing at nothing is removed
    faults.local_proxy.set_mode("script", script="I like turtles and sunny afternoons.")
    body = post(faults, "/v1/chat", {"mode": "tutor_rag", "top_k": 3, "messages": [
        {"role": "user", "content": "What makes a thesis statement strong?"}]}).json()
    assert body["citations_from"] == "none" and body["citations"] == []
    assert not re.search(r"\[\d+\]", body["choices"][0]["message"]["content"])


# --- bad input is never a 500 ------------------------------------------------------------------

@pytest.mark.parametrize("classification", [1, ["private"], {"x": 1}, True])
def test_non_string_classification_is_400(stack, classification):
    error = openai_error(post(stack, "/v1/chat/completions", {
        "model": BASE_MODEL, "messages": HELLO, "metadata": {"data_classification": classification}}), 400)
    assert error["code"] == "invalid_classification"


def test_a_model_name_outside_latin1_is_not_a_500(stack):
    response = post(stack, "/v1/chat/completions", {"model": "模型-v1", "messages": HELLO, "max_tokens": 4})
    assert response.status_code == 404, response.text
    openai_error(response, 404)


def test_fields_outside_the_allow_list_and_image_parts_are_refused(stack):
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]}]
    assert openai_error(post(stack, "/v1/chat/completions", {"model": BASE_MODEL, "messages": image}), 422)
    unknown = openai_error(post(stack, "/v1/chat/completions", {"model": BASE_MODEL, "messages": HELLO,
                                                                "kv_transfer_params": {"x": 1}}), 422)
    assert "kv_transfer_params" in unknown["message"]
    # Text content parts still work.
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    assert post(stack, "/v1/chat/completions", {"model": BASE_MODEL, "messages": parts, "max_tokens": 4}).status_code == 200
