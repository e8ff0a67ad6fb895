"""charts/canarium against a real API server: `helm template charts/canarium | kubectl apply
--dry-run=server -f -` passes (with the defaults and with every option on), and the operator
installed FROM THE CHART (`helm install`, the pinned helm of hack/helm.sh) runs a canary rollout
on the real node, watching only the test's namespace through the chart's RoleBinding.

Only the chart's operator may reconcile the test's ModelDeployment: every other in-cluster
Canarium operator (the session's kustomize install, `installed_operator`) is scaled to zero for
the test and given back its replicas afterwards. The release is uninstalled and its namespace
deleted at the end; the CRDs stay (Helm never deletes those of crds/).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import REAL_NODE, Cluster, wait_until
from tests.e2e.conftest import traceback_blocks
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels
from tests.e2e.test_install import monitoring_crds  # noqa: F401  (a fixture used by name)
from tests.e2e.test_rollout import NAME, deploy, pods_of, policy, start_v1, wait_status
from tests.helm import CHART, helm_binary, template_text

RELEASE = "e2e-helm"
OPERATOR_LABEL = "app.kubernetes.io/name=canarium-operator"
IMAGE_TAG = "0.1.0"  # what `make images` builds and loads into the node
DENIED = re.compile(r"forbidden|not enough permissions|unauthorized", re.IGNORECASE)


def _dry_run(cluster: Cluster, text: str) -> list[str]:
    """`kubectl apply --dry-run=server -f -` of a YAML stream; the objects it accepted."""
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text).stdout
    return [line for line in out.splitlines() if line.endswith("(server dry run)")]


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_helm_template_passes_a_server_dry_run(cluster: Cluster) -> None:
    """The acceptance command as it stands: `helm template charts/canarium` (release namespace
    `default`), every object accepted by the API server."""
    text = subprocess.run(
        [helm_binary(), "template", str(CHART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects = _objects(text)
    assert {d["kind"] for d in objects} >= {"Deployment", "ClusterRole", "ServiceAccount"}
    accepted = _dry_run(cluster, text)
    assert len(accepted) == len(objects), accepted


@pytest.mark.usefixtures("monitoring_crds", "crds")
def test_every_option_passes_a_server_dry_run(cluster: Cluster, namespace: str) -> None:
    """CRDs, the Namespace (restricted), namespaced RBAC, the Secrets role, monitoring: all
    accepted; the operator pod passes Pod Security "restricted" admission."""
    text = template_text(
        "namespace.create=true",
        f"watchNamespaces={{{namespace}}}",
        "rbac.secrets.read=true",
        "logLevel=debug",
        "monitoring.labels.release=kube-prometheus-stack",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
        f"servingImage.digest=sha256:{'ab' * 32}",
        release=RELEASE,
        namespace=namespace,
        crds=True,
    )
    objects = _objects(text)
    kinds = {d["kind"] for d in objects}
    assert kinds >= {"CustomResourceDefinition", "Namespace", "RoleBinding", "ServiceMonitor",
                     "PodMonitor", "PrometheusRule", "ConfigMap"}  # fmt: skip
    accepted = _dry_run(cluster, text)
    assert len(accepted) == len(objects), accepted
    # Pod Security admission checks pods, not Deployments: a pod of the template, dry-run in
    # the test's namespace, which enforces "restricted" as the chart's Namespace does.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    (deployment,) = [d for d in objects if d["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canarium-operator-psa", "namespace": namespace},
        "spec": {**deployment["spec"]["template"]["spec"], "serviceAccountName": "default"},
    }
    assert _dry_run(cluster, yaml.safe_dump(pod)) == [
        "pod/canarium-operator-psa created (server dry run)"
    ]


# --- the operator installed from the chart ------------------------------------------------
@pytest.fixture
def other_operators_stopped(cluster: Cluster) -> Iterator[None]:
    """Every in-cluster Canarium operator scaled to zero (its pods gone), so that only the
    chart's reconciles the test's objects; each gets its replicas back afterwards."""
    deployments = cluster.get_json("deployments", "-A", "-l", OPERATOR_LABEL)["items"]
    scaled = [
        (d["metadata"]["namespace"], d["metadata"]["name"], d["spec"].get("replicas", 1))
        for d in deployments
        if d["spec"].get("replicas", 1) > 0 and not d["metadata"].get("deletionTimestamp")
    ]
    try:
        for ns, name, _ in scaled:
            cluster.kubectl("scale", "-n", ns, f"deploy/{name}", "--replicas=0")
        wait_until(
            lambda: not cluster.get_json("pods", "-A", "-l", OPERATOR_LABEL)["items"],
            timeout=90,
            what="no Canarium operator pod left",
        )
        yield
    finally:
        for ns, name, replicas in scaled:
            # Its namespace may have been on its way out (a previous session's uninstall).
            gone = cluster.kubectl("get", "-n", ns, f"deploy/{name}", check=False).returncode
            if gone:
                continue
            cluster.kubectl("scale", "-n", ns, f"deploy/{name}", f"--replicas={replicas}")
            cluster.kubectl(
                "rollout", "status", "-n", ns, f"deploy/{name}", "--timeout=180s", timeout=190
            )


class Release:
    """`helm install` of the chart into its own namespace (Pod Security "restricted")."""

    def __init__(self, cluster: Cluster, watched: str) -> None:
        self.cluster = cluster
        self.namespace = f"canarium-helm-{uuid.uuid4().hex[:6]}"
        self.watched = watched

    def helm(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        proc = subprocess.run(
            [helm_binary(), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0 or not check, (
            f"helm {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        )
        return proc.stdout

    def install(self) -> Release:
        self.cluster.core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=self.namespace,
                    labels={"pod-security.kubernetes.io/enforce": "restricted"},
                )
            )
        )
        self.helm(
            "install", RELEASE, str(CHART),
            "--namespace", self.namespace,
            "--set", f"watchNamespaces={{{self.watched}}}",
            "--set", "image.repository=ghcr.io/canarium-dev/canarium-operator",
            "--set", f"image.tag={IMAGE_TAG}",
            "--set", "servingImage.repository=ghcr.io/canarium-dev/canarium-serving",
            "--set", f"servingImage.tag={IMAGE_TAG}",
            # The CRDs are the session's (conftest `crds`, from crds/, which the chart's copy
            # equals): Helm 4 would server-side apply its copy over them, and fail on fields
            # another manager set differently.
            "--skip-crds",
            "--wait", "--timeout=3m",
        )  # fmt: skip
        wait_until(
            lambda: "controller started" in self.log(), timeout=60, what="controller started"
        )
        return self

    def uninstall(self) -> None:
        try:
            # No check: an install that failed half-way may have left no release to remove.
            self.helm("uninstall", RELEASE, "--namespace", self.namespace, "--wait", check=False)
        finally:
            self.cluster.kubectl(
                "delete", "namespace", self.namespace, "--ignore-not-found", "--wait=false"
            )

    def pod(self) -> dict[str, Any]:
        """The leader's pod: of the release's replicas, the one its Lease names."""

        def leader() -> dict[str, Any] | None:
            leases = self.cluster.get_json("leases", "-n", self.namespace)["items"]
            holders = {
                ((lease.get("spec") or {}).get("holderIdentity") or "").rsplit("_", 1)[0]
                for lease in leases
            }
            pods = self.cluster.get_json("pods", "-n", self.namespace, "-l", OPERATOR_LABEL)
            live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
            assert len(live) == 2, [p["metadata"]["name"] for p in live]  # the chart's default
            return next((p for p in live if p["metadata"]["name"] in holders), None)

        pod: dict[str, Any] = wait_until(leader, timeout=60, what="the release's leader")
        return pod

    def log(self) -> str:
        proc = self.cluster.kubectl(
            "logs", "-n", self.namespace, "-l", OPERATOR_LABEL, "--tail=-1", check=False
        )
        return proc.stdout if proc.returncode == 0 else ""


@pytest.fixture
def release(
    cluster: Cluster, namespace: str, crds: None, other_operators_stopped: None
) -> Iterator[Release]:
    installed = Release(cluster, watched=namespace)
    try:
        yield installed.install()
    finally:
        installed.uninstall()


@pytest.mark.usefixtures("restricted")
def test_operator_installed_from_the_chart_runs_a_rollout_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    release: Release,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    pod = release.pod()
    assert pod["spec"]["nodeName"] == REAL_NODE
    assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-canarium"
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True
    assert container["image"].endswith(f"canarium-operator:{IMAGE_TAG}")
    # Watching the test's namespace only, with a RoleBinding there and no cluster-wide one.
    assert f"--namespace={namespace}" in pod["spec"]["containers"][0]["args"]
    binding = cluster.get_json("rolebinding", "-n", namespace, f"{RELEASE}-canarium")
    assert binding["roleRef"]["name"] == f"{RELEASE}-canarium"
    assert (
        cluster.kubectl("get", "clusterrolebinding", f"{RELEASE}-canarium", check=False).returncode
        != 0
    )

    old = start_v1(cluster, namespace, models, policy())
    serving = cluster.get_json("pods", "-n", namespace, "-l", f"canarium.dev/deployment={NAME}")
    images = {c["image"] for p in serving["items"] for c in p["spec"]["containers"]}
    assert images == {f"ghcr.io/canarium-dev/canarium-serving:{IMAGE_TAG}"}
    assert {p["spec"]["nodeName"] for p in serving["items"]} == {REAL_NODE}
    traffic = load(NAME, models.x, rate=120, duration=120)
    traffic.start()
    time.sleep(1)
    deploy(cluster, namespace, models.good_v2, "2.0.0", policy())

    seen_weights: list[int] = []

    def promoted(st: dict[str, Any]) -> bool:
        canary = st.get("canary")
        if canary and canary.get("weight") not in seen_weights:
            seen_weights.append(canary["weight"])
        return st.get("phase") == "Healthy" and st["stable"]["modelVersion"] == "2.0.0"

    final = wait_status(cluster, namespace, promoted, "2.0.0 promoted", timeout=150)
    assert seen_weights[:1] == [10], seen_weights
    assert final["history"][0]["outcome"] == "Promoted"
    wait_until(lambda: not pods_of(cluster, namespace, old), timeout=60, what="old pods gone")
    traffic.stop()
    answered = [r for r in traffic.results if r.status == 200]
    assert {r.version for r in answered} == {"1.0.0", "2.0.0"}

    # The chart's operator, and it alone, did the work: every Event is its pod's, and its
    # RBAC was enough (no permission error, no traceback).
    events = cluster.get_json("events", "-n", namespace)["items"]
    ours = {e.get("reportingInstance") for e in events if e.get("reportingComponent") == "canarium"}
    assert ours == {release.pod()["metadata"]["name"]}
    log = release.log()
    denied = [line for line in log.splitlines() if DENIED.search(line)]
    assert not denied, "permission errors in the operator log:\n" + "\n".join(denied)
    assert not traceback_blocks(log), traceback_blocks(log)
