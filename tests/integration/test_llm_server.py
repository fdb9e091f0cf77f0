"""llm_server's control API over the real vLLM it launched: the adapter registry (list, load
the newest version of a family, unload) and its errors."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.support.stack import LLM_SERVER_TOKEN

pytestmark = pytest.mark.integration
CONTROL = {"x-tutorstack-service-token": LLM_SERVER_TOKEN}


def vllm_model_ids(vllm_stack) -> set[str]:
    response = httpx.get(f"{vllm_stack.vllm_url}/v1/models", timeout=10,
                         headers={"Authorization": f"Bearer {vllm_stack.api_key}"})
    return {m["id"] for m in response.raise_for_status().json()["data"]}


def test_vllm_refuses_requests_without_its_api_key(vllm_stack):
    assert httpx.get(f"{vllm_stack.vllm_url}/v1/models", timeout=10).status_code == 401


def test_the_sample_adapter_is_served_from_start_up(vllm_stack):
    listing = httpx.get(f"{vllm_stack.control_url}/v1/adapters", headers=CONTROL, timeout=10).json()
    rows = {row["name"]: row for row in listing["data"]}
    assert rows["peer-v1"]["loaded"] is True and rows["peer-v1"]["rank"] == 8
    assert listing["latest_loaded"]["peer"] == "peer-v1"
    assert "peer-v1" in vllm_model_ids(vllm_stack)


def test_load_family_takes_the_newest_version_then_unload(vllm_stack):
    for name in ("probe-v1", "probe-v2"):  # two versions of a family on disk, neither loaded
        shutil.copytree(vllm_stack.adapters_dir / "peer-v1", vllm_stack.adapters_dir / name)
    control = vllm_stack.control_url
    try:
        loaded = httpx.post(f"{control}/v1/adapters/load", json={"name": "probe"}, headers=CONTROL, timeout=120)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"name": "probe-v2", "path": str((vllm_stack.adapters_dir / "probe-v2").resolve()),
                                 "loaded": True, "changed": True}
        assert "probe-v2" in vllm_model_ids(vllm_stack) and "probe-v1" not in vllm_model_ids(vllm_stack)
        again = httpx.post(f"{control}/v1/adapters/load", json={"name": "probe-v2"}, headers=CONTROL, timeout=120).json()
        assert again["changed"] is False

        # vLLM answers with the adapter that was just loaded.
        completion = httpx.post(f"{vllm_stack.vllm_url}/v1/chat/completions", timeout=120,
                                headers={"Authorization": f"Bearer {vllm_stack.api_key}"},
                                json={"model": "probe-v2", "max_tokens": 8,
                                      "messages": [{"role": "user", "content": "Hi"}]})
        assert completion.status_code == 200 and completion.json()["model"] == "probe-v2"

        unloaded = httpx.post(f"{control}/v1/adapters/unload", json={"name": "probe-v2"}, headers=CONTROL, timeout=60)
        assert unloaded.status_code == 200 and unloaded.json()["loaded"] is False
        assert "probe-v2" not in vllm_model_ids(vllm_stack)
        missing = httpx.post(f"{control}/v1/adapters/unload", json={"name": "probe-v2"}, headers=CONTROL, timeout=60)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "adapter_not_loaded"
    finally:
        httpx.post(f"{control}/v1/adapters/unload", json={"name": "probe-v2"}, headers=CONTROL, timeout=60)
        for name in ("probe-v1", "probe-v2"):
            shutil.rmtree(vllm_stack.adapters_dir / name, ignore_errors=True)


def test_bad_names_and_missing_adapters_are_clear_errors(vllm_stack):
    control = vllm_stack.control_url
    bad = httpx.post(f"{control}/v1/adapters/load", json={"name": "Peer V1"}, headers=CONTROL, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    absent = httpx.post(f"{control}/v1/adapters/load", json={"name": "nosuch"}, headers=CONTROL, timeout=30)
    assert absent.status_code == 404 and "nosuch" in absent.json()["error"]["message"]
    no_dir = httpx.post(f"{control}/v1/adapters/load", json={"name": "nosuch-v3"}, headers=CONTROL, timeout=30)
    assert no_dir.status_code == 404


def test_control_api_needs_its_token_and_loads_only_from_the_adapters_dir(vllm_stack, tmp_path):
    control = vllm_stack.control_url
    for headers in ({}, {"x-tutorstack-service-token": "wrong"}, {"authorization": "Bearer wrong"}):
        refused = httpx.get(f"{control}/v1/adapters", headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_service_token"
        load = httpx.post(f"{control}/v1/adapters/load", json={"name": "peer-v999"}, headers=headers, timeout=10)
        assert load.status_code == 401
    # A directory outside LLM_ADAPTERS_DIR, by absolute path, by `..` or through a symlink, is refused.
    outside = tmp_path / "evil-adapter"
    shutil.copytree(vllm_stack.adapters_dir / "peer-v1", outside)
    link = vllm_stack.adapters_dir / "link-out"
    link.symlink_to(outside, target_is_directory=True)
    try:
        for path in (str(outside), str(vllm_stack.adapters_dir / ".." / "evil"), str(link), "../../etc"):
            forbidden = httpx.post(f"{control}/v1/adapters/load", json={"name": "peer-v999", "path": path},
                                   headers=CONTROL, timeout=30)
            assert forbidden.status_code == 403, (path, forbidden.text)
            assert forbidden.json()["error"]["code"] == "adapter_path_forbidden"
        assert "peer-v999" not in vllm_model_ids(vllm_stack)
    finally:
        link.unlink()


def test_control_api_reports_health_and_metrics(vllm_stack):
    ready = httpx.get(f"{vllm_stack.control_url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["checks"]["vllm"] == "ok"
    metrics = httpx.get(f"{vllm_stack.control_url}/metrics", timeout=10).text
    assert "llm_server_adapter_operations_total" in metrics


def test_the_sample_adapter_changes_what_the_model_says(vllm_stack):
    """peer-v1 was trained to answer like an upbeat classmate ("Hey! ..."); the base model does not."""
    def answer(model: str) -> str:
        response = httpx.post(f"{vllm_stack.vllm_url}/v1/chat/completions", timeout=120,
                              headers={"Authorization": f"Bearer {vllm_stack.api_key}"},
                              json={"model": model, "temperature": 0, "max_tokens": 40, "messages": [
                                  {"role": "user", "content": "Can you look at my intro? It starts with: "
                                                              "Since the dawn of time, people have argued."}]})
        return response.raise_for_status().json()["choices"][0]["message"]["content"]

    adapted, base = answer("peer-v1"), answer("SmolLM2-135M-Instruct")
    assert adapted.startswith("Hey"), adapted
    assert not base.startswith("Hey") and adapted != base
