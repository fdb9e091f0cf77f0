"""SFT on the shipped style samples -> publish into the running vLLM -> the adapter answers through the
gateway differently from the base model; rollback returns to the previous version."""

import time

import httpx
import pytest

from tests.training.conftest import tiny_config
from tests.support.stack import LLM_SERVER_TOKEN
from training.publish import publish, rollback
from training.train import run_sft

pytestmark = pytest.mark.integration
BASE_MODEL = "SmolLM2-135M-Instruct"  # the served name (tests/conftest.py)
FAMILY = "peer"  # ai_service maps chat mode "peer" to this family
PROMPT = [{"role": "user", "content": "Is this thesis okay? 'Homework is bad.'"}]


def chat(stack, model: str) -> str:
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", timeout=180,
                          headers={"authorization": f"Bearer {stack.api_key}"},
                          json={"model": model, "messages": PROMPT, "max_tokens": 32, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    return response.json()["choices"][0]["message"]["content"]


def served_ids(stack) -> set[str]:
    response = httpx.get(f"{stack.gateway_url}/v1/models", headers={"authorization": f"Bearer {stack.api_key}"},
                         timeout=30)
    return {m["id"] for m in response.json()["data"]}


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout  # ai_service caches the model list for a few seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def test_published_adapter_answers_differently(stack, base_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_SERVER_API_TOKEN", LLM_SERVER_TOKEN)  # what an ML engineer exports to publish
    # A strong, short run (high lr) so 12 steps visibly move greedy output of the 135M model.
    config = tiny_config(base_model, tmp_path / "style", max_steps=12, per_device_batch_size=4,
                         max_length=256, learning_rate=3e-3, save_steps=100)
    adapter = run_sft(config)
    published = publish(str(adapter), FAMILY, directory=str(stack.adapters_dir), url=stack.control_url)
    name = published["name"]
    try:
        assert name.startswith(f"{FAMILY}-v") and name != f"{FAMILY}-v1"
        assert wait_for(lambda: name in served_ids(stack)), served_ids(stack)
        tuned, base = chat(stack, name), chat(stack, BASE_MODEL)
        assert tuned.strip() and tuned != base
        mode = httpx.post(f"{stack.gateway_url}/v1/chat", timeout=180,
                          headers={"authorization": f"Bearer {stack.api_key}"},
                          json={"mode": "peer", "messages": PROMPT, "max_tokens": 8, "temperature": 0})
        assert mode.status_code == 200 and mode.json()["adapter"] == name
    finally:
        result = rollback(FAMILY, directory=str(stack.adapters_dir), url=stack.control_url)
    assert result["removed"] == name
    assert wait_for(lambda: name not in served_ids(stack))
    assert not (stack.adapters_dir / name).exists()
