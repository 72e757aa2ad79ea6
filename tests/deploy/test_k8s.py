"""deploy/k8s: every overlay renders offline with `kubectl kustomize`, each rendered object is
valid for Kubernetes 1.32 (strict schema validation with `kubernetes-validate`, offline), and the
properties a running bot depends on hold: probes on the bot's endpoints, a grace period above
its drain, unprivileged pods on a read-only root, Postgres from the Secret, at most 6 Socket
Mode replicas, and an Ingress exposing only /slack/events in HTTP mode.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.service import OPS_PATHS
from bot.settings import Settings

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')"
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES = "1.32"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: cannot render the kustomizations (.ci/run installs it)",
)
TARGETS = ["overlays/socket-mode", "overlays/http-mode", "migrate"]
OVERLAYS = ["overlays/socket-mode", "overlays/http-mode"]
SOCKET_MODE_MAX = 6  # Slack allows 10 Socket Mode connections per app; stale ones hold slots


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize deploy/k8s/<target>` prints (no cluster involved)."""
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(target: str, kind: str) -> dict[str, Any]:
    (obj,) = [o for o in render(target) if o["kind"] == kind]
    return obj


def pod_spec(target: str) -> dict[str, Any]:
    kind = "Job" if target == "migrate" else "Deployment"
    spec: dict[str, Any] = one(target, kind)["spec"]["template"]["spec"]
    return spec


def bot_container(target: str) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = pod_spec(target)["containers"]
    return container


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    return {e["name"]: e for e in container.get("env", [])}


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_rendered_objects_are_valid_kubernetes_1_32(target: str) -> None:
    """Every object an overlay renders passes strict validation against the 1.32 schemas."""
    objects = render(target)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The validator used here does fail on a wrong field, so a typo in deploy/ cannot pass."""
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    kubernetes_validate.validate(secret, KUBERNETES, strict=True)
    broken = copy.deepcopy(secret)
    broken["stringdata"] = broken.pop("stringData")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


@needs_kubectl
def test_example_secret_is_never_applied_and_holds_every_key_the_pods_read() -> None:
    """The Secret example is applied by no kustomization, holds placeholders and every key read."""
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())
    for target in TARGETS:
        assert not [o for o in render(target) if o["kind"] == "Secret"], target
        spec = pod_spec(target)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"], (target, ref["key"])


@needs_kubectl
@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_use_the_bots_health_endpoints_on_its_port(target: str) -> None:
    """Liveness asks /healthz and readiness /readyz on the port the bot listens on (PORT)."""
    container = bot_container(target)
    (port,) = container["ports"]
    assert env(container)["PORT"]["value"] == str(port["containerPort"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, port["name"])
        assert get["path"] in OPS_PATHS  # served by bot/service.py in both modes
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@needs_kubectl
@pytest.mark.parametrize("target", OVERLAYS)
def test_grace_period_outlasts_the_bots_drain(target: str) -> None:
    """Kubernetes waits longer than preStop + POWABOT_SHUTDOWN_GRACE before it kills the pod."""
    container = bot_container(target)
    configured = env(container).get("POWABOT_SHUTDOWN_GRACE", {}).get("value")
    drain = float(configured or Settings.model_fields["POWABOT_SHUTDOWN_GRACE"].default)
    assert drain >= Settings.model_fields["POWABOT_SHUTDOWN_GRACE"].default
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod_spec(target)["terminationGracePeriodSeconds"] > pre_stop + drain


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_unprivileged_on_a_read_only_root(target: str) -> None:
    """Every container runs as uid 10001, cannot escalate, has no capabilities, cannot write /."""
    spec = pod_spec(target)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    for container in spec.get("initContainers", []) + spec["containers"]:
        security = {**spec["securityContext"], **container.get("securityContext", {})}
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_the_store_is_the_postgres_named_in_the_secret(target: str) -> None:
    """POWABOT_STORE comes from the Secret and is required: no pod falls back to its own SQLite."""
    (container,) = [c for c in pod_spec(target)["containers"] if "POWABOT_STORE" in env(c)]
    ref = env(container)["POWABOT_STORE"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "POWABOT_STORE" and not ref.get("optional", False)


@needs_kubectl
@pytest.mark.parametrize("target", OVERLAYS)
def test_service_pdb_hpa_and_metrics_point_at_the_bot(target: str) -> None:
    """The Service, PDB and HPA select the bot's pods; Prometheus scrapes the bot's port."""
    deployment = one(target, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = bot_container(target)["ports"][0]
    service = one(target, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in OPS_PATHS
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    pdb = one(target, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(target, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    max_replicas = env(bot_container(target))["POWABOT_MAX_REPLICAS"]["value"]
    assert max_replicas == str(hpa["spec"]["maxReplicas"])  # the fallback budget's divisor


@needs_kubectl
def test_socket_mode_stays_within_slacks_connection_limit() -> None:
    """Socket Mode runs with the app token, on at most 6 replicas, and with no Ingress."""
    variables = env(bot_container("overlays/socket-mode"))
    assert "SLACK_APP_TOKEN" in variables and "SLACK_SIGNING_SECRET" not in variables
    assert one("overlays/socket-mode", "HorizontalPodAutoscaler")["spec"]["maxReplicas"] <= (
        SOCKET_MODE_MAX
    )
    assert one("overlays/socket-mode", "Deployment")["spec"].get("replicas", 1) <= SOCKET_MODE_MAX
    assert not [o for o in render("overlays/socket-mode") if o["kind"] == "Ingress"]


@needs_kubectl
def test_http_mode_exposes_only_slack_events_through_an_ingress() -> None:
    """HTTP mode has the signing secret, no app token, and an Ingress routing /slack/events only."""
    variables = env(bot_container("overlays/http-mode"))
    assert "SLACK_SIGNING_SECRET" in variables and "SLACK_APP_TOKEN" not in variables
    ingress = one("overlays/http-mode", "Ingress")
    service = one("overlays/http-mode", "Service")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/slack/events", "Exact")
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]  # Slack only posts to HTTPS
