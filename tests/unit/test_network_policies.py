"""Kubernetes NetworkPolicies: only the gateway is reachable from outside; only ai-service
reaches vLLM, llm_server and graphrag (observers get ports, never tokens)."""

from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OBSERVERS = {"health", "prometheus"}


def policies() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / "networkpolicies.yaml").read_text()) if doc]


def selected_names(selector: dict) -> set[str]:
    labels = selector.get("matchLabels", {})
    if "app.kubernetes.io/name" in labels:
        return {labels["app.kubernetes.io/name"]}
    names = set()
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In":
            names |= set(expression["values"])
    return names


def sources_by_target() -> dict[str, set[str]]:
    """For each pod name, who may open a connection to it ('*' = anyone)."""
    allowed: dict[str, set[str]] = {}
    for policy in policies():
        spec = policy["spec"]
        targets = selected_names(spec["podSelector"]) or {"<all>"}
        for rule in spec.get("ingress", []):
            sources = {"*"} if "from" not in rule else set().union(
                *(selected_names(peer.get("podSelector", {})) for peer in rule["from"]))
            for target in targets:
                allowed.setdefault(target, set()).update(sources)
    return allowed


def test_everything_is_denied_by_default():
    deny = [p for p in policies() if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]


def test_only_the_gateway_and_the_console_page_are_open_to_anyone():
    # The console holds no secrets: every action it takes goes through the gateway with the user's key.
    allowed = sources_by_target()
    assert {target for target, sources in allowed.items() if "*" in sources} == {"gateway", "console"}


def test_only_ai_service_reaches_vllm_llm_server_and_graphrag():
    allowed = sources_by_target()
    assert allowed["graphrag"] - OBSERVERS == {"ai-service"}
    # feedback publishes retrained adapters through llm_server's control port (8010), never vLLM's (8000)
    assert allowed["vllm"] - OBSERVERS == {"ai-service", "feedback"}
    for policy in policies():
        if "vllm" not in selected_names(policy["spec"]["podSelector"]):
            continue
        for rule in policy["spec"].get("ingress", []):
            sources = set().union(*(selected_names(p.get("podSelector", {})) for p in rule.get("from", [])))
            if "feedback" in sources:
                assert [port["port"] for port in rule["ports"]] == [8010]


def test_policies_are_listed_in_the_kustomization():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "networkpolicies.yaml" in kustomization["resources"]
