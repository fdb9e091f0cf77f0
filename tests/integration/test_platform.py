"""The platform end to end: the openai SDK through the gateway to the real vLLM, and the
routing policy's behaviour under real upstream failures (fault proxies the tests own)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

BASE_MODEL = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "Give me one tip for writing a clear thesis statement."}]


def sdk(stack, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key or stack.api_key, max_retries=0, timeout=120)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


# --- the happy path -------------------------------------------------------------------------

def test_gateway_health_is_public(stack):
    assert httpx.get(f"{stack.gateway_url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{stack.gateway_url}/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["redis"] == "ok"


def test_sdk_chat_completion_served_locally_with_usage(stack):
    raw = sdk(stack).chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=24, temperature=0)
    completion = raw.parse()
    assert raw.headers["x-tutorstack-upstream"] == "local"
    assert raw.headers["x-request-id"]
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.model == BASE_MODEL


def test_sdk_streaming_with_usage(stack):
    stream = sdk(stack).chat.completions.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len([c for c in chunks if c.choices]) > 2  # really streamed, not one buffered blob
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sdk_models_list_has_base_and_adapter(stack):
    ids = {m.id for m in sdk(stack).models.list()}
    assert {BASE_MODEL, "peer-v1"} <= ids


def test_chat_mode_selects_adapter(stack):
    headers = {"authorization": f"Bearer {stack.api_key}"}
    body = {"messages": HELLO, "max_tokens": 24, "temperature": 0}
    peer = httpx.post(f"{stack.gateway_url}/v1/chat", json={**body, "mode": "peer"}, headers=headers, timeout=120)
    tutor = httpx.post(f"{stack.gateway_url}/v1/chat", json={**body, "mode": "tutor"}, headers=headers, timeout=120)
    assert peer.status_code == 200 and tutor.status_code == 200, (peer.text, tutor.text)
    assert peer.json()["adapter"] == "peer-v1" and peer.json()["model"] == "peer-v1"
    assert tutor.json()["adapter"] is None and tutor.json()["model"] == BASE_MODEL
    assert peer.json()["choices"][0]["message"]["content"].strip()
    assert tutor.json()["mode"] == "tutor" and tutor.headers["x-tutorstack-upstream"] == "local"


def test_adapter_family_name_resolves_to_latest_version(stack):
    completion = sdk(stack).chat.completions.create(model="peer", messages=HELLO, max_tokens=8, temperature=0)
    assert completion.model == "peer-v1"


def test_unknown_mode_lists_valid_modes(stack):
    response = httpx.post(f"{stack.gateway_url}/v1/chat", json={"mode": "pirate", "messages": HELLO},
                          headers={"authorization": f"Bearer {stack.api_key}"})
    error = assert_openai_error(response, 400)
    assert "tutor" in error["message"] and "peer" in error["message"] and error["param"] == "mode"


def test_streamed_mode_chat(stack):
    with httpx.stream("POST", f"{stack.gateway_url}/v1/chat", timeout=120,
                      json={"mode": "peer", "messages": HELLO, "max_tokens": 16, "stream": True},
                      headers={"authorization": f"Bearer {stack.api_key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["model"] == "peer-v1"


# --- auth, limits and bad input -------------------------------------------------------------

def test_missing_and_wrong_api_key_are_401(stack):
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, key="ts-not-a-real-key").chat.completions.create(model=BASE_MODEL, messages=HELLO)
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", json={"model": BASE_MODEL, "messages": HELLO})
    assert assert_openai_error(response, 401)["type"] == "authentication_error"


def test_ai_service_refuses_calls_without_the_shared_token(stack):
    response = httpx.post(f"{stack.ai_service_url}/v1/chat/completions", json={"model": BASE_MODEL, "messages": HELLO})
    assert assert_openai_error(response, 401)["code"] == "invalid_gateway_token"


def test_rate_limit_gives_429_with_headers(stack):
    headers = {"authorization": f"Bearer {stack.limited_api_key}"}
    statuses = []
    for _ in range(4):
        response = httpx.get(f"{stack.gateway_url}/v1/models", headers=headers)
        statuses.append(response.status_code)
    assert statuses[:3] == [200, 200, 200]
    error = assert_openai_error(response, 429)
    assert error["type"] == "rate_limit_error"
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(response.headers["retry-after"]) >= 1
    with pytest.raises(openai.RateLimitError):
        sdk(stack, key=stack.limited_api_key).models.list()


def test_oversize_body_is_413(stack):
    huge = [{"role": "user", "content": "x" * 70_000}]
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", json={"model": BASE_MODEL, "messages": huge},
                          headers={"authorization": f"Bearer {stack.api_key}"})
    assert assert_openai_error(response, 413)["code"] == "request_too_large"


def test_malformed_json_is_400_and_schema_errors_are_422(stack):
    headers = {"authorization": f"Bearer {stack.api_key}", "content-type": "application/json"}
    bad_json = httpx.post(f"{stack.gateway_url}/v1/chat/completions", content=b'{"model": ', headers=headers)
    assert assert_openai_error(bad_json, 400)["code"] == "invalid_json"
    no_messages = httpx.post(f"{stack.gateway_url}/v1/chat/completions", json={"model": BASE_MODEL}, headers=headers)
    assert assert_openai_error(no_messages, 422)["param"] == "messages"
    bad_temperature = httpx.post(f"{stack.gateway_url}/v1/chat/completions", headers=headers,
                                 json={"model": BASE_MODEL, "messages": HELLO, "temperature": 7})
    assert assert_openai_error(bad_temperature, 422)["param"] == "temperature"
    with pytest.raises(openai.UnprocessableEntityError):
        sdk(stack).chat.completions.create(model=BASE_MODEL, messages=[])


def test_curl_style_body_without_json_content_type_is_read_as_json(stack):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded; the README's curl must work as written.
    headers = {"authorization": f"Bearer {stack.api_key}", "content-type": "application/x-www-form-urlencoded"}
    body = json.dumps({"mode": "tutor", "messages": HELLO, "max_tokens": 8}).encode()
    response = httpx.post(f"{stack.gateway_url}/v1/chat", content=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip()
    not_json = httpx.post(f"{stack.gateway_url}/v1/chat", content=b"mode=tutor", headers=headers)
    assert assert_openai_error(not_json, 400)["code"] == "invalid_json"


def test_request_id_is_kept_and_returned(stack):
    response = httpx.get(f"{stack.gateway_url}/v1/models", headers={
        "authorization": f"Bearer {stack.api_key}", "x-request-id": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    time.sleep(0.3)
    logged = [json.loads(line) for line in stack.processes["ai_service"].log_path.read_text().splitlines()
              if line.startswith("{") and "trace-abc-123" in line]
    assert logged and all(entry["request_id"] == "trace-abc-123" for entry in logged)


def test_upstream_4xx_is_returned_not_retried(faults):
    before = faults.cloud_proxy.requests_seen
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(faults, key=faults.public_api_key).chat.completions.create(model="no-such-model", messages=HELLO)
    assert faults.cloud_proxy.requests_seen == before
    error = caught.value.body  # OpenAI's shape, and the names that would have worked
    assert error["type"] == "not_found_error" and error["code"] == "model_not_found", error
    assert "`no-such-model` does not exist here. Valid models: " in error["message"], error


# --- failures and fallback ----------------------------------------------------------------------

def test_local_killed_public_falls_back_to_cloud_private_gets_503(faults):
    faults.local_proxy.kill()
    raw = sdk(faults, key=faults.public_api_key).chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=8)
    assert raw.headers["x-tutorstack-upstream"] == "cloud"
    assert raw.parse().choices[0].message.content.strip()

    response = httpx.post(f"{faults.gateway_url}/v1/chat/completions", timeout=60,
                          json={"model": BASE_MODEL, "messages": HELLO, "max_tokens": 8},
                          headers={"authorization": f"Bearer {faults.api_key}"})
    error = assert_openai_error(response, 503)
    assert "private" in error["message"]

    # A public key's request raised to private by header never leaves for the cloud either.
    cloud_before = faults.cloud_proxy.requests_seen
    raised = httpx.post(f"{faults.gateway_url}/v1/chat/completions", timeout=60,
                        json={"model": BASE_MODEL, "messages": HELLO, "max_tokens": 8},
                        headers={"authorization": f"Bearer {faults.public_api_key}", "x-data-classification": "private"})
    assert_openai_error(raised, 503)
    assert faults.cloud_proxy.requests_seen == cloud_before
    with pytest.raises(openai.InternalServerError):
        sdk(faults).chat.completions.create(model=BASE_MODEL, messages=HELLO, max_tokens=8)


def test_local_hanging_falls_back_after_the_local_timeout(faults):
    faults.local_proxy.set_mode("hang")
    started = time.monotonic()
    raw = sdk(faults, key=faults.public_api_key).chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=8)
    elapsed = time.monotonic() - started
    assert raw.headers["x-tutorstack-upstream"] == "cloud"
    assert 12 <= elapsed < 60  # LLM_LOCAL_TIMEOUT_SEC=12 in the test stack


def test_local_5xx_falls_back_for_streams_before_the_first_byte(faults):
    faults.local_proxy.set_mode("error500")
    raw = sdk(faults, key=faults.public_api_key).chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=8, stream=True)
    assert raw.headers["x-tutorstack-upstream"] == "cloud"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices).strip()


def test_stream_cut_after_first_chunk_ends_with_in_band_error_and_no_fallback(faults):
    faults.local_proxy.set_mode("cut_after_first_chunk")
    cloud_before = faults.cloud_proxy.requests_seen
    stream = sdk(faults, key=faults.public_api_key).chat.completions.create(
        model=BASE_MODEL, messages=HELLO, max_tokens=32, stream=True)
    with pytest.raises(openai.APIError) as err:
        for _ in stream:
            pass
    assert "mid-stream" in str(err.value)
    assert faults.cloud_proxy.requests_seen == cloud_before


def test_metrics_label_the_serving_upstream(stack):
    text = httpx.get(f"{stack.ai_service_url}/metrics").text
    served = [l for l in text.splitlines() if l.startswith("tutorstack_responses_by_upstream_total{")]
    assert any('upstream="local"' in l and 'status="200"' in l for l in served)
    assert "http_request_duration_seconds_bucket" in text
