"""Configuration validation: bad settings fail at start-up with the variable's name."""

import pytest
from pydantic import ValidationError

from ai_service.modes import UnknownModeError, load_modes, resolve_mode
from common.adapters import latest_version
from ai_service.settings import AIServiceSettings
from gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout
    for name in ("APP_ENV", "AI_GATEWAY_SHARED_TOKEN", "LLM_API_KEY_LOCAL", "LLM_ROUTING_POLICY",
                 "LLM_BASE_URL_CLOUD", "LLM_MODEL_CLOUD", "LLM_LOCAL_TIMEOUT_SEC"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_valid_in_dev():
    settings = AIServiceSettings()
    assert settings.llm_routing_policy.value == "local_first"
    assert settings.llm_local_timeout_sec == 30 and settings.llm_cloud_timeout_sec == 60
    assert not settings.cloud_configured


def test_empty_local_api_key_names_the_variable(monkeypatch):
    monkeypatch.setenv("LLM_API_KEY_LOCAL", "")
    with pytest.raises(ValidationError, match="LLM_API_KEY_LOCAL"):
        AIServiceSettings()


@pytest.mark.parametrize("env", ["test", "prod"])
def test_shared_token_required_outside_dev(monkeypatch, env):
    monkeypatch.setenv("APP_ENV", env)
    with pytest.raises(ValidationError, match="AI_GATEWAY_SHARED_TOKEN"):
        AIServiceSettings()
    with pytest.raises(ValidationError, match="AI_GATEWAY_SHARED_TOKEN"):
        GatewaySettings()
    monkeypatch.setenv("AI_GATEWAY_SHARED_TOKEN", "s3cret")
    with pytest.raises(ValidationError, match="AI_SERVICE_INTERNAL_TOKEN"):
        AIServiceSettings()
    monkeypatch.setenv("AI_SERVICE_INTERNAL_TOKEN", "internal")
    assert AIServiceSettings().ai_gateway_shared_token == "s3cret"


def test_unknown_policy_and_bad_timeout_are_rejected(monkeypatch):
    monkeypatch.setenv("LLM_ROUTING_POLICY", "cloud_sometimes")
    with pytest.raises(ValidationError, match="llm_routing_policy"):
        AIServiceSettings()
    monkeypatch.setenv("LLM_ROUTING_POLICY", "local_first")
    monkeypatch.setenv("LLM_LOCAL_TIMEOUT_SEC", "0")
    with pytest.raises(ValidationError, match="llm_local_timeout_sec"):
        AIServiceSettings()


def test_cloud_only_needs_a_cloud(monkeypatch):
    monkeypatch.setenv("LLM_ROUTING_POLICY", "cloud_only")
    with pytest.raises(ValidationError, match="LLM_BASE_URL_CLOUD"):
        AIServiceSettings()


def test_modes_resolution_and_rag_suffix(tmp_path):
    modes = load_modes(None)
    assert resolve_mode("tutor", modes)[0].name == "tutor"
    mode, rag = resolve_mode("peer_rag", modes)
    assert mode.adapter == "peer" and rag
    with pytest.raises(UnknownModeError) as err:
        resolve_mode("pirate", modes)
    assert "tutor" in str(err.value) and "peer_rag" in str(err.value)
    extra = tmp_path / "modes.yaml"
    extra.write_text("critic:\n  system_prompt: Be a strict critic.\n  adapter: critic\n")
    assert resolve_mode("critic", load_modes(str(extra)))[0].adapter == "critic"
    extra.write_text("Bad Name:\n  system_prompt: x\n")
    with pytest.raises(ValueError, match="invalid mode name"):
        load_modes(str(extra))


def test_latest_adapter_version_picks_highest_number():
    ids = ["SmolLM2-135M-Instruct", "peer-v1", "peer-v10", "peer-v2", "peerless-v99", "tutor-v3"]
    assert latest_version(ids, "peer") == "peer-v10"
    assert latest_version(ids, "critic") is None
