"""Kubernetes pods hold only their own credentials: no container mounts the whole Secret, and each
one's secretKeyRefs are what common/secrets.py allows its service."""

from pathlib import Path

import yaml

from common.secrets import ALL_SECRETS, SECRETS_BY_SERVICE

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CONTAINER_SERVICE = {"ai-service": "ai_service", "llm-server": "llm_server"}


def containers():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                yield path.name, container


def test_no_container_takes_the_whole_secret():
    for name, container in containers():
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, f"{name}: {container['name']} mounts every secret"


def test_secret_refs_are_the_services_own():
    seen = set()
    for name, container in containers():
        service = CONTAINER_SERVICE.get(container["name"], container["name"])
        allowed = SECRETS_BY_SERVICE.get(service, frozenset()) | {"REDIS_URL", "REDIS_PASSWORD"}
        for entry in container.get("env", []):
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                seen.add(container["name"])
                assert ref["key"] in allowed, f"{name}: {container['name']} holds {ref['key']}"
                assert ref["key"] not in ALL_SECRETS or ref["key"] in SECRETS_BY_SERVICE.get(service, ()), name
    assert {"gateway", "ai-service", "graphrag", "llm-server"} <= seen


def test_only_gateway_and_ai_service_hold_the_shared_token():
    holders = {c["name"] for _, c in containers()
               for e in c.get("env", []) if ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key")
               == "AI_GATEWAY_SHARED_TOKEN"}
    assert holders == {"gateway", "ai-service"}


def test_no_container_has_two_env_lists():
    for path in sorted(K8S.glob("*.yaml")):
        for block in path.read_text().split("- name: ")[1:]:
            head = block.split("\n        - name: ")[0]
            assert head.count("\n          env:") <= 1, f"{path.name}: a container with two env: lists"
