"""Each service holds only its own credentials; `make run` generates the missing ones once."""

import os
import re
import stat
import subprocess
import sys

from common.secrets import ALL_SECRETS, SECRETS_BY_SERVICE, ensure_dev_secrets, environment_for, new_secret
from tests.support.processes import REPO_ROOT

EVERYTHING = {name: f"value-of-{name}" for name in ALL_SECRETS} | {"PATH": "/bin", "APP_ENV": "dev"}


def test_graphrag_and_llm_server_never_see_the_shared_token_or_the_cloud_key():
    for service in ("graphrag", "llm_server", "writing", "guided", "practice", "health", "feedback", "console"):
        env = environment_for(service, EVERYTHING)
        assert "AI_GATEWAY_SHARED_TOKEN" not in env and "LLM_API_KEY_CLOUD" not in env, service
        assert env["PATH"] == "/bin" and env["APP_ENV"] == "dev"  # non-secrets pass through
    assert set(environment_for("graphrag", EVERYTHING)) & set(ALL_SECRETS) == {"GRAPHRAG_API_TOKEN"}
    assert set(environment_for("gateway", EVERYTHING)) & set(ALL_SECRETS) == {"AI_GATEWAY_SHARED_TOKEN",
                                                                              "GATEWAY_KEY_SIGNING_SECRET"}
    assert set(environment_for("unknown", EVERYTHING)) & set(ALL_SECRETS) == set()


def test_only_gateway_and_ai_service_hold_the_shared_token():
    holders = {service for service, allowed in SECRETS_BY_SERVICE.items() if "AI_GATEWAY_SHARED_TOKEN" in allowed}
    assert holders == {"gateway", "ai_service"}
    assert {s for s, allowed in SECRETS_BY_SERVICE.items() if "LLM_API_KEY_CLOUD" in allowed} == {"ai_service"}


def test_dev_secrets_are_generated_once_private_and_stable(tmp_path):
    path = tmp_path / "state" / "secrets.env"
    first = ensure_dev_secrets(path, {"GRAPHRAG_API_TOKEN": "mine", "LLM_API_KEY_LOCAL": "dummy"})
    assert "GRAPHRAG_API_TOKEN" not in first  # a value the operator set is kept, not replaced
    assert len(first["AI_GATEWAY_SHARED_TOKEN"]) >= 32 and first["LLM_API_KEY_LOCAL"] != "dummy"
    assert "LLM_API_KEY_CLOUD" not in first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_dev_secrets(path, {}) | first == ensure_dev_secrets(path, {})  # same values on the next run


def test_launch_strips_what_the_service_may_not_hold():
    env = {**os.environ, **EVERYTHING, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "common.launch", "graphrag", "--", sys.executable, "-c",
                          "import os; print(sorted(k for k in os.environ if k.endswith(('TOKEN','KEY_LOCAL','SECRET','KEY_CLOUD'))))"],
                         env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['GRAPHRAG_API_TOKEN']"


def test_generated_secrets_never_read_as_a_command_line_option(tmp_path):
    """vLLM and llama-server take their key as `--api-key KEY`: a key starting with "-" stops them starting
    (one token_urlsafe value in 64 did), so every generated secret is plain hex."""
    drawn = [new_secret() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in drawn) and len(set(drawn)) == len(drawn)
    stored = ensure_dev_secrets(tmp_path / "secrets.env", {})
    assert stored and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in stored.values())
