"""deploy/k8s against the Kubernetes schemas (offline, the `kubernetes-validate` package) and against
the code: every service's ports, probes, bind host and URLs from its settings class; vLLM replicas
discovered through the headless Service that ai_service's balancer resolves; HPAs, PDBs, Redis
persistence and the Prometheus scrape config. (tests/unit/test_deploy_config.py covers compose and
the original k8s files; tests/unit/test_k8s_secrets.py the per-container secrets.)"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from ai_service.balancer import parse_control_urls, parse_local_upstreams

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSIONS = ("1.29", "1.33")  # the oldest supported minor still common, and a recent one

# `python -m <module>` -> the settings class that reads its port and bind host.
SETTINGS = {
    "gateway": ("gateway.settings", "GatewaySettings"),
    "ai_service": ("ai_service.settings", "AIServiceSettings"),
    "llm_server": ("llm_server.settings", "LLMServerSettings"),
    "graphrag": ("graphrag.settings", "GraphRAGSettings"),
    "services.guided": ("services.guided.settings", None),
    "services.writing": ("services.writing.settings", None),
    "services.practice": ("services.practice.settings", None),
    "services.feedback": ("services.feedback.settings", None),
    "services.health": ("services.health.settings", None),
    "services.console": ("services.console.settings", None),
}
# Every service of the platform runs in the cluster (deployment name -> module).
EXPECTED = {"gateway": "gateway", "ai-service": "ai_service", "graphrag": "graphrag", "guided": "services.guided",
            "writing": "services.writing", "practice": "services.practice", "feedback": "services.feedback",
            "health": "services.health", "console": "services.console"}


def documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


DOCS = documents()


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def settings_class(module: str):
    path, name = SETTINGS[module]
    mod = importlib.import_module(path)
    if name is None:
        name = next(n for n in dir(mod) if n.endswith("Settings") and n != "ServiceSettings"
                    and getattr(getattr(mod, n), "__module__", "") == path)
    return getattr(mod, name)


def field_env(cls, field: str) -> str:
    info = cls.model_fields[field]
    alias = info.validation_alias or info.alias
    if alias is None:
        return field.upper()
    return alias if isinstance(alias, str) else alias.choices[0]


def default(cls, field: str):
    return cls.model_fields[field].default


def module_of(container: dict) -> str | None:
    argv = [str(a) for a in container.get("command", []) + container.get("args", [])]
    return argv[argv.index("-m") + 1] if "-m" in argv else None


def app_containers() -> list[tuple[str, dict, dict]]:
    found = []
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in by_kind(kind).items():
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container.get("image") == "tutorstack":
                    found.append((name, doc, container))
    return found


def config() -> dict[str, str]:
    return by_kind("ConfigMap")["tutorstack-config"]["data"]


# --- schemas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    assert len(DOCS) > 30
    for doc in DOCS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields are errors too
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message} at "
                        f"{'/'.join(map(str, exc.path))}")


def test_the_validator_does_catch_a_bad_manifest():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {"spec": {"containers": []}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


# --- every service as the code has it ----------------------------------------------------------------

def test_every_platform_service_runs_in_the_cluster():
    running = {name: module_of(c) for name, _, c in app_containers()}
    for deployment, module in EXPECTED.items():
        assert running.get(deployment) == module, f"{deployment}: expected python -m {module}"


@pytest.mark.parametrize(("name", "doc", "container"), app_containers(), ids=lambda v: v if isinstance(v, str) else "")
def test_ports_probes_and_bind_host_match_the_settings(name, doc, container):
    cls = settings_class(module_of(container))
    port = default(cls, "port")
    assert [p["containerPort"] for p in container["ports"]] == [port], f"{name}: port of {cls.__name__}"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert probe in container, f"{name}: no {probe}"
        assert container[probe]["httpGet"] == {"path": path, "port": port}, f"{name}: {probe}"
    assert config().get(field_env(cls, "host")) == "0.0.0.0", f"{name}: {field_env(cls, 'host')} must bind all"
    service_name = container["name"]
    service = by_kind("Service").get(service_name)
    assert service is not None, f"no Service {service_name}"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
    labels = doc["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), f"Service {service_name} selects no pod of {name}"


def test_service_urls_in_the_config_reach_the_right_port():
    """<NAME>_SERVICE_URL (and the other URLs) name a Service whose port is the target service's default port."""
    services = by_kind("Service")
    targets = {"WRITING_SERVICE_URL": "services.writing", "GUIDED_SERVICE_URL": "services.guided",
               "PRACTICE_SERVICE_URL": "services.practice", "HEALTH_SERVICE_URL": "services.health",
               "FEEDBACK_SERVICE_URL": "services.feedback", "AI_SERVICE_URL": "ai_service",
               "GRAPH_RAG_URL": "graphrag", "LLM_SERVER_URL": "llm_server", "CONSOLE_GATEWAY_URL": "gateway"}
    for key, module in targets.items():
        url = urlsplit(config()[key])
        assert url.hostname in services, f"{key}: no Service {url.hostname}"
        assert url.port == default(settings_class(module), "port"), f"{key}: port"
        assert url.port in [p["port"] for p in services[url.hostname]["spec"]["ports"]]


def test_internal_services_are_reachable_by_ai_service():
    """ai_service's delegate settings have a URL setting for each internal service; the ConfigMap sets it."""
    ai = settings_class("ai_service")
    for field in ai.model_fields:
        if field.endswith("_service_url") and field != "ai_service_url":
            assert field_env(ai, field) in config(), f"ConfigMap lacks {field_env(ai, field)}"


# --- vLLM replicas and the balancer -------------------------------------------------------------------

def test_ai_service_discovers_every_vllm_replica_through_the_headless_service():
    local = parse_local_upstreams(config()["LLM_BASE_URL_LOCAL"])
    assert local.discovered, "LLM_BASE_URL_LOCAL must be a dns+ discovery URL in the cluster"
    host = urlsplit(local.discovery_url)
    headless = by_kind("Service")[host.hostname]
    assert headless["spec"]["clusterIP"] == "None", "discovery needs one A record per pod"
    vllm = by_kind("Deployment")["vllm"]
    pod = vllm["spec"]["template"]
    assert headless["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert host.port in [p["containerPort"] for p in containers["vllm"]["ports"]]
    (control,) = parse_control_urls(config()["LLM_REPLICA_CONTROL_URLS"])
    control_port = urlsplit(control).port
    assert urlsplit(control).hostname == host.hostname
    assert control_port in [p["containerPort"] for p in containers["llm-server"]["ports"]], "the sidecar's port"
    assert control_port == default(settings_class("llm_server"), "port")
    assert {p["port"] for p in headless["spec"]["ports"]} >= {host.port, control_port}
    # the ConfigMap as ai_service reads it (with the Secret's tokens)
    ai = settings_class("ai_service")(**{**config(), "AI_GATEWAY_SHARED_TOKEN": "x", "AI_SERVICE_INTERNAL_TOKEN": "y"})
    assert ai.llm_replica_control_urls == control


def test_vllm_replicas_run_on_gpu_nodes_with_the_adapters_volume_and_health_readiness():
    vllm = by_kind("Deployment")["vllm"]
    spec = vllm["spec"]["template"]["spec"]
    assert vllm["spec"]["replicas"] >= 2
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    containers = {c["name"]: c for c in spec["containers"]}
    engine = containers["vllm"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] >= 1
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health", "port": 8000}
    assert "--enable-lora" in engine["args"]
    adapters_dir = config()["LLM_ADAPTERS_DIR"]
    for name in ("vllm", "llm-server"):
        mounts = {m["name"]: m["mountPath"] for m in containers[name]["volumeMounts"]}
        assert mounts.get("adapters") == adapters_dir, f"{name} sees adapters at LLM_ADAPTERS_DIR"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert "ReadWriteMany" in by_kind("PersistentVolumeClaim")[claims["adapters"]]["spec"]["accessModes"]
    assert containers["llm-server"]["args"][-2:] == ["--external-vllm", "http://127.0.0.1:8000"]


# --- scaling and availability ---------------------------------------------------------------------------

def test_hpas_scale_ai_service_and_the_gateway_on_cpu_they_request():
    hpas = by_kind("HorizontalPodAutoscaler")
    deployments = by_kind("Deployment")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} >= {"ai-service", "gateway"}
    for hpa in hpas.values():
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        for container in target["spec"]["template"]["spec"]["containers"]:
            assert "cpu" in container["resources"]["requests"], "a CPU target needs CPU requests"


def test_every_replicated_deployment_has_a_disruption_budget_that_lets_drains_proceed():
    pdbs = by_kind("PodDisruptionBudget")
    deployments = by_kind("Deployment")
    covered = set()
    for name, pdb in pdbs.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matches = [d for d, doc in deployments.items()
                   if selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"PDB {name} selects {matches}"
        replicas = deployments[matches[0]]["spec"]["replicas"]
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas, f"PDB {name} would block every eviction"
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
        covered.add(matches[0])
    replicated = {d for d, doc in deployments.items() if doc["spec"]["replicas"] >= 2}
    assert replicated <= covered, f"no PDB for {replicated - covered}"
    assert "vllm" in covered


def test_redis_keeps_its_data_on_a_volume():
    redis = by_kind("StatefulSet")["redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    claim = redis["spec"]["volumeClaimTemplates"][0]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]


# --- Prometheus -----------------------------------------------------------------------------------------

def _scrape_keeps(service: dict, port: dict, rules: list[dict]) -> str | None:
    """Applies the keep/drop/job rules of the scrape config to one Service port: the job name, or None."""
    labels = {"__meta_kubernetes_service_name": service["metadata"]["name"],
              "__meta_kubernetes_endpoint_port_name": port.get("name", ""), "job": "tutorstack"}
    import re
    for rule in rules:
        value = ";".join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return labels["job"]


def test_prometheus_scrapes_every_service_and_each_vllm_replica():
    prometheus = yaml.safe_load(by_kind("ConfigMap")["prometheus-config"]["data"]["prometheus.yml"])
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "tutorstack"]
    assert job["kubernetes_sd_configs"][0]["role"] == "endpoints"
    jobs = set()
    for service in by_kind("Service").values():
        for port in service["spec"]["ports"]:
            name = _scrape_keeps(service, port, job["relabel_configs"])
            if name:
                jobs.add(name)
    expected = {"gateway", "ai-service", "graphrag", "guided", "writing", "practice", "feedback", "health", "console",
                "vllm", "llm_server"}
    assert jobs == expected, jobs
    rbac = by_kind("Role")["prometheus"]["rules"][0]
    assert {"endpoints", "pods", "services"} <= set(rbac["resources"])
    deployment = by_kind("Deployment")["prometheus"]["spec"]["template"]["spec"]
    assert deployment["serviceAccountName"] == "prometheus"
