"""llm_server's llama.cpp proxy against a stand-in llama-server that echoes the `lora` field it receives:
the model name -> LoRA translation, the renamed responses and stream chunks, vLLM-shaped errors and
auth, and loading an adapter at runtime (a second llama-server takes over with the longer list)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Process, free_port, python_module, wait_healthy
from tests.support.stack import BASE_MODEL, LLM_SERVER_TOKEN, SAMPLE_ADAPTER, tutorstack_home

pytestmark = pytest.mark.integration
KEY = "proxy-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONTROL = {"x-tutorstack-service-token": LLM_SERVER_TOKEN}
FAKE = Path(__file__).with_name("fake_llama_server.py")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llamacpp-proxy")
    binary = workdir / "llama-server"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    binary.chmod(0o755)
    adapters = workdir / "adapters"
    shutil.copytree(tutorstack_home() / "adapters" / SAMPLE_ADAPTER, adapters / SAMPLE_ADAPTER)
    port, control = free_port(), free_port()
    env = {**os.environ, "LLM_ENGINE": "llamacpp", "LLAMACPP_SERVER_BIN": str(binary), "VLLM_PORT": str(port),
           "LLM_SERVER_PORT": str(control), "LLM_ADAPTERS_DIR": str(adapters), "LLM_API_KEY_LOCAL": KEY,
           "APP_ENV": "test", "LLM_SERVER_API_TOKEN": LLM_SERVER_TOKEN, "LLM_SERVER_HOST": "127.0.0.1"}
    proc = Process("llm_server-fake-llamacpp", python_module("llm_server", "serve"), env, workdir)
    try:
        wait_healthy(f"http://127.0.0.1:{control}/readyz", proc, 180)
    except Exception:
        print(proc.log_tail(80))
        proc.stop()
        raise
    yield {"url": f"http://127.0.0.1:{port}", "control": f"http://127.0.0.1:{control}", "adapters": adapters,
           "proc": proc}
    proc.stop()


def ask(proxy, model, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{proxy['url']}/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def echoed(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["choices"][0]["message"]["content"])


def test_models_lists_the_base_model_and_the_converted_adapter(proxy):
    rows = httpx.get(f"{proxy['url']}/v1/models", headers=AUTH).json()["data"]
    assert [(r["id"], r["parent"]) for r in rows] == [(BASE_MODEL, None), (SAMPLE_ADAPTER, BASE_MODEL)]
    assert rows[0]["root"].endswith(".gguf")
    held = echoed(ask(proxy, BASE_MODEL))["loras_held"]
    assert len(held) == 1 and held[0].endswith(".gguf") and Path(held[0]).is_file()


def test_the_model_name_picks_the_lora_per_request(proxy):
    adapted = ask(proxy, SAMPLE_ADAPTER)
    assert echoed(adapted)["lora"] == [{"id": 0, "scale": 1.0}]
    assert adapted.json()["model"] == SAMPLE_ADAPTER  # the requested name comes back, as from vLLM
    for model in (BASE_MODEL, "", None):  # base: the adapter explicitly off (a slot keeps its last LoRA)
        base = ask(proxy, model)
        assert echoed(base)["lora"] == [{"id": 0, "scale": 0.0}] and base.json()["model"] == BASE_MODEL


def test_streamed_chunks_carry_the_adapter_name(proxy):
    with httpx.stream("POST", f"{proxy['url']}/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": SAMPLE_ADAPTER, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
                      ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 2 and all(c["model"] == SAMPLE_ADAPTER for c in chunks)
    assert json.loads("".join(c["choices"][0]["delta"]["content"] for c in chunks))["lora"] == [{"id": 0, "scale": 1.0}]


def test_unknown_models_bad_bodies_and_missing_keys_get_vllm_shaped_errors(proxy):
    unknown = ask(proxy, "nosuch-v1")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "The model `nosuch-v1` does not exist."
    assert ask(proxy, "peer").status_code == 404  # families are ai_service's to resolve
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(f"{proxy['url']}/v1/chat/completions", json={"model": BASE_MODEL}, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{proxy['url']}/v1/models", headers=headers).status_code == 401
    bad = httpx.post(f"{proxy['url']}/v1/chat/completions", content=b"{not json", headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["message"]
    assert httpx.get(f"{proxy['url']}/health").status_code == 200  # open, like vLLM's
    metrics = httpx.get(f"{proxy['url']}/metrics").text
    assert "llamacpp:requests_processing" in metrics and "vllm:num_requests_running" in metrics


def test_loading_an_adapter_hands_over_to_a_llama_server_holding_it_and_unloading_stops_routing(proxy):
    shutil.copytree(proxy["adapters"] / SAMPLE_ADAPTER, proxy["adapters"] / "probe-v1")
    try:
        loaded = httpx.post(f"{proxy['control']}/v1/adapters/load", json={"name": "probe"}, headers=CONTROL,
                            timeout=120)
        assert loaded.status_code == 200 and loaded.json()["name"] == "probe-v1", loaded.text
        reply = echoed(ask(proxy, "probe-v1"))
        assert reply["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}] and len(reply["loras_held"]) == 2
        assert echoed(ask(proxy, SAMPLE_ADAPTER))["lora"] == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
        listing = httpx.get(f"{proxy['control']}/v1/adapters", headers=CONTROL).json()
        assert {r["name"] for r in listing["data"] if r["loaded"]} == {SAMPLE_ADAPTER, "probe-v1"}

        unloaded = httpx.post(f"{proxy['control']}/v1/adapters/unload", json={"name": "probe-v1"}, headers=CONTROL)
        assert unloaded.status_code == 200
        assert ask(proxy, "probe-v1").status_code == 404
        # Still held by llama-server, so still switched off explicitly for everyone else.
        assert echoed(ask(proxy, BASE_MODEL))["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
        again = httpx.post(f"{proxy['control']}/v1/adapters/load", json={"name": "probe-v1"}, headers=CONTROL,
                           timeout=120)
        assert again.status_code == 200 and again.json()["changed"] is True
        assert echoed(ask(proxy, "probe-v1"))["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    finally:
        httpx.post(f"{proxy['control']}/v1/adapters/unload", json={"name": "probe-v1"}, headers=CONTROL)
        shutil.rmtree(proxy["adapters"] / "probe-v1", ignore_errors=True)
    assert proxy["proc"].alive()
