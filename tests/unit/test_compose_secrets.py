"""docker compose containers hold only their own credentials: every service that reads .env gets, after
compose's own precedence (environment over env_file), exactly the secrets common/secrets.py allows it,
and the file is what scripts/scope_compose_secrets.py writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from common.secrets import ALL_SECRETS, SECRETS_BY_SERVICE
from scripts.scope_compose_secrets import REDIS_USERS, rewrite

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


class UniqueKeyLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping (docker compose refuses such a file too)."""


def _mapping(loader, node, deep=False):
    keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    repeated = {k for k in keys if keys.count(k) > 1}
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                lambda loader, node: dict(_mapping(loader, node, deep=True)))


def dot_env() -> dict[str, str]:
    """An operator's .env: .env.example's names, every secret set."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    env.update({name: f"secret-{name}" for name in ALL_SECRETS})
    env["REDIS_PASSWORD"] = "secret-redis"
    return env


def interpolate(value, env: dict[str, str]) -> str:
    def one(match):
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name, "")
        if op == ":?" and not current:
            raise AssertionError(f"{name} required: {arg}")
        return current or (arg if op == ":-" else "")

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", one, str(value))


def containers():
    """(service, what its container's environment holds) after compose's precedence."""
    compose = yaml.load(COMPOSE.read_text(), Loader=UniqueKeyLoader)
    env = dot_env()
    for service, spec in compose["services"].items():
        merged = dict(env) if spec.get("env_file") else {}
        if spec.get("env_file"):
            assert spec["env_file"] in (".env", [".env"]), service
        merged.update({k: interpolate(v, env) for k, v in (spec.get("environment") or {}).items()})
        yield service, spec, merged


def test_the_compose_file_is_what_the_script_writes():
    text = COMPOSE.read_text()
    assert rewrite(text) == text, "run python scripts/scope_compose_secrets.py"


def test_every_service_that_reads_env_holds_only_its_own_secrets():
    checked = set()
    for service, spec, environment in containers():
        if not spec.get("env_file"):
            continue
        assert service in SECRETS_BY_SERVICE, f"{service}: add it to common/secrets.py's SECRETS_BY_SERVICE"
        allowed = SECRETS_BY_SERVICE[service]
        for name in ALL_SECRETS:
            if name in allowed:
                assert environment.get(name) == f"secret-{name}", f"{service} lost its {name}"
            else:
                assert not environment.get(name), f"{service} holds {name}"
        assert not environment.get("REDIS_PASSWORD"), f"{service} holds REDIS_PASSWORD"
        carries_password = "secret-redis" in environment.get("REDIS_URL", "")
        assert carries_password == (service in REDIS_USERS), f"{service}: REDIS_URL {environment.get('REDIS_URL')!r}"
        checked.add(service)
    assert {"gateway", "ai_service", "graphrag", "llm_server", "health", "console"} <= checked


def test_third_party_images_get_no_env_file_and_only_their_secret():
    for service, spec, environment in containers():
        if spec.get("env_file"):
            continue
        text = yaml.safe_dump(spec)
        for name in ALL_SECRETS:
            if name in text:
                assert name in SECRETS_BY_SERVICE.get(service, ()), f"{service} holds {name}"
        if service != "redis":
            assert "REDIS_PASSWORD" not in text, service


@pytest.mark.parametrize("service", ["graphrag", "llm_server", "console"])
def test_services_that_are_not_the_gateways_peers_never_see_its_token(service):
    environment = dict((s, e) for s, _, e in containers())[service]
    assert not environment.get("AI_GATEWAY_SHARED_TOKEN") and not environment.get("LLM_API_KEY_CLOUD")


def test_the_script_scopes_a_new_service():
    text = COMPOSE.read_text().replace(
        "\n  # --- monitoring", "\n  newsvc:\n    image: x\n    environment:\n      A: b\n    env_file: .env\n\n"
        "  # --- monitoring", 1)
    scoped = yaml.safe_load(rewrite(text))["services"]["newsvc"]["environment"]
    assert all(scoped[name] == "" for name in ALL_SECRETS) and scoped["A"] == "b"
