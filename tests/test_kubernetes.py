"""deploy/kubernetes: every manifest valid against Kubernetes' own schemas, and consistent with
the image and the exporter (port, probes, uid, the partition-lease replicas, the PodMonitor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest version still supported upstream when this was written


def manifests() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = {name: yaml.safe_load((DEPLOY / name).read_text()) for name in kustomization["resources"]}
    assert {p.name for p in DEPLOY.glob("*.yaml")} == set(docs) | {"kustomization.yaml"}, "unlisted manifest"
    return docs


@pytest.mark.parametrize("name", [n for n, d in manifests().items() if "monitoring.coreos.com" not in d["apiVersion"]])
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in manifests().values()}


def test_deployment_runs_replicas_probed_on_health_and_readiness() -> None:
    kinds = by_kind()
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    [port] = container["ports"]
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yml"])
    assert config["listen_address"].rsplit(":", 1)[1] == str(port["containerPort"])
    assert "store_url_file" in config and "store_path" not in config  # PostgreSQL, not a pod-local file
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's uid (Dockerfile)
    assert "useradd --system --uid 10001" in (DEPLOY.parent.parent / "Dockerfile").read_text()
    secret_keys = set(kinds["Secret"]["stringData"])
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    for key, value in _file_settings(config):
        directory, _, filename = value.rpartition("/")
        assert directory in mounted and filename in secret_keys, f"{key} -> {value} is not mounted from the Secret"


def _file_settings(node: Any, where: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in _file_settings(v, f"{where}.{k}")] + [
            (k, v) for k, v in node.items() if k.endswith("_file") and isinstance(v, str)]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _file_settings(v, f"{where}[{i}]")]
    return []


def test_service_and_podmonitor_select_the_pods_by_port_name() -> None:
    kinds = by_kind()
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service, monitor = kinds["Service"], kinds["PodMonitor"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    # PodMonitor (a Prometheus Operator CRD, not in Kubernetes' schemas): every replica is scraped
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    # the Operator's default job name is "<namespace>/<podmonitor>": the job is taken from a pod
    # label instead, so the replicas are scraped under the job OutboundCallExporterAbsent watches
    alerts = yaml.safe_load((REPO / "prometheus" / "alerts.yml").read_text())
    [absent] = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "OutboundCallExporterAbsent"]
    assert f'job="{labels[monitor["spec"]["jobLabel"]]}"' in absent["expr"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
