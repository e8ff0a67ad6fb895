"""manifests/install and manifests/monitoring against a real API server, and the operator run
under the installed ServiceAccount's own token: its RBAC is enough (a ModelDeployment becomes
Ready, revisions are replaced, autoscalers dropped, Events recorded, with no 403 in the log)
and no more (`kubectl auth can-i` refuses what it must not do).

Cluster-wide objects this creates (namespace canarium-system, ClusterRole/Binding canarium,
the monitoring.coreos.com CRDs if it installed them) are removed afterwards; the Canarium CRDs
stay (other tests use them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import REPO, Cluster, wait_until
from tests.e2e.gomod import module_dir, versions

INSTALL = REPO / "manifests" / "install"
MONITORING = REPO / "manifests" / "monitoring"
EXAMPLES = REPO / "manifests" / "examples"
NAMESPACE = "canarium-system"
SA = f"system:serviceaccount:{NAMESPACE}:canarium"
CLUSTER_OBJECTS = (("clusterrolebinding", "canarium"), ("clusterrole", "canarium"))
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")
DENIED = re.compile(r"forbidden|not enough permissions|unauthorized", re.IGNORECASE)


def _build(cluster: Cluster, directory: Path) -> list[dict[str, Any]]:
    out = cluster.kubectl("kustomize", str(directory)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _retarget(docs: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The objects with canarium-system replaced by a test namespace (the Namespace dropped)."""
    out = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        if doc["metadata"].get("namespace") == NAMESPACE:
            doc["metadata"]["namespace"] = namespace
        out.append(doc)
    return out


def _dry_run(cluster: Cluster, docs: list[dict[str, Any]]) -> str:
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    ).stdout


def test_install_manifests_pass_server_dry_run(cluster: Cluster, namespace: str) -> None:
    docs = _build(cluster, INSTALL)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == 2
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"):
        assert kind in kinds
    # The operator pod itself must pass Pod Security "restricted" admission (which checks pods,
    # not Deployments): dry-run a pod of the template in a namespace that enforces it.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canarium-operator-psa", "namespace": namespace},
        "spec": {**deployment["spec"]["template"]["spec"], "serviceAccountName": "default"},
    }
    out = _dry_run(cluster, [*_retarget(docs, namespace), pod])
    assert "canarium-operator-psa serverside-applied (server dry run)" in out, out


@pytest.fixture
def monitoring_crds(cluster: Cluster) -> Iterator[None]:
    """The Prometheus Operator CRDs the monitoring manifests need: the cluster's own if it has
    them, else the pinned release's, from the Go module proxy (removed afterwards)."""
    names = [f"{plural}.monitoring.coreos.com" for plural in MONITORING_CRDS]
    present = cluster.kubectl("get", "crd", *names, "-o", "name", check=False)
    if present.returncode == 0:
        yield
        return
    version = versions()["PROMETHEUS_OPERATOR_VERSION"]
    module = f"github.com/prometheus-operator/prometheus-operator@{version}"
    crd_dir = module_dir(module) / "example" / "prometheus-operator-crd"
    files = [str(crd_dir / f"monitoring.coreos.com_{plural}.yaml") for plural in MONITORING_CRDS]
    cluster.kubectl("apply", "--server-side", *(a for f in files for a in ("-f", f)))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    try:
        yield
    finally:
        cluster.kubectl("delete", "crd", *names, "--ignore-not-found", "--wait=false")


@pytest.mark.usefixtures("monitoring_crds")
def test_monitoring_manifests_pass_server_dry_run(cluster: Cluster, namespace: str) -> None:
    docs = _build(cluster, MONITORING)
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap",
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    out = _dry_run(cluster, _retarget(docs, namespace))
    assert out.count("(server dry run)") == 4, out


# --- the operator under its own ServiceAccount ----------------------------------------------
@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[None]:
    """manifests/install applied for real; removed afterwards unless it was there before."""
    existing = cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json", check=False)
    preexisting = (
        existing.returncode == 0
        and json.loads(existing.stdout).get("status", {}).get("phase") == "Active"
    )
    if not preexisting:  # a previous run's namespace may still be terminating
        wait_until(
            lambda: cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0,
            timeout=60,
            what=f"namespace {NAMESPACE} gone",
        )
    try:  # removed even when the apply fails half-way
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(INSTALL))
        yield
    finally:
        if not preexisting:
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
            for kind, name in CLUSTER_OBJECTS:
                cluster.kubectl("delete", kind, name, "--ignore-not-found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _service_account_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig for the same API server that authenticates with a token of the installed
    ServiceAccount (TokenRequest API), as the operator's pod would."""
    token = cluster.kubectl(
        "create", "token", "canarium", "-n", NAMESPACE, "--duration=15m"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify").stdout)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "canarium", "user": {"token": token}}],
        "contexts": [
            {
                "name": "canarium",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "canarium"},
            }
        ],
        "current-context": "canarium",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


def _metric(url: str, name: str, labels: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _mdep(name: str, version: str, autoscaling: bool) -> dict[str, Any]:
    serving: dict[str, Any] = {"replicas": 2}
    if autoscaling:
        serving["autoscaling"] = {"minReplicas": 2, "maxReplicas": 4}
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": f"file:///models/{version}.onnx",
                "format": "onnx",
                "version": version,
            },
            "serving": serving,
        },
    }


@pytest.mark.usefixtures("installed")
def test_operator_rbac_is_enough_and_no_more(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # The installed Deployment's own pod (kwok would run it; it would do nothing) is not waited
    # for: on a busy cluster it may wait for capacity. test_install_manifests_pass_server_dry_run
    # puts the same pod through Pod Security admission.
    kubeconfig = _service_account_kubeconfig(cluster, tmp_path / "kubeconfig")
    metrics_port, liveness_port = _free_port(), _free_port()
    instance = f"canarium-rbac-test-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "operator.log"
    canarium = Path(sys.executable).with_name("canarium")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": instance}
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster config of a CI pod
    with log_path.open("w") as log:
        operator = subprocess.Popen(
            [
                str(canarium),
                "run",
                "--metrics-port",
                str(metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                f"http://127.0.0.1:{liveness_port}/healthz",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    failure: AssertionError | None = None
    try:
        cluster.apply((EXAMPLES / "rolloutpolicy.yaml").read_text(), namespace)
        cluster.apply((EXAMPLES / "iris.yaml").read_text(), namespace)
        # Without a rollout policy a new version replaces the old revision once Ready (delete
        # of a Deployment); dropping autoscaling deletes the HorizontalPodAutoscaler.
        cluster.apply(_mdep("plain", "1", autoscaling=True), namespace)
        for name in ("iris", "plain"):
            cluster.kubectl(
                "wait", "-n", namespace, "--for=condition=Ready", f"mdep/{name}", "--timeout=60s"
            )
        hpas = cluster.kubectl("get", "hpa", "-n", namespace, "-o", "name").stdout.split()
        assert len(hpas) == 1, hpas
        cluster.apply(_mdep("plain", "2", autoscaling=False), namespace)

        def replaced() -> bool:
            deps = cluster.get_json(
                "deploy", "-n", namespace, "-l", "canarium.dev/deployment=plain"
            )
            hpas = cluster.get_json("hpa", "-n", namespace)
            mdep = cluster.get_json("mdep", "-n", namespace, "plain")
            return (
                len(deps["items"]) == 1
                and not hpas["items"]
                and mdep.get("status", {}).get("stable", {}).get("modelVersion") == "2"
            )

        wait_until(replaced, timeout=60, what="revision 1 replaced by 2, HPA deleted")
        cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", "mdep/plain", "--timeout=60s"
        )
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert _metric(url, "canarium_reconcile_total", 'kind="ModelDeployment"') > 0
        assert _metric(url, "canarium_reconcile_errors_total", 'kind="ModelDeployment"') == 0
        events = cluster.get_json("events", "-n", namespace)["items"]
        ours = {
            e.get("reportingInstance") for e in events if e.get("reportingComponent") == "canarium"
        }
        assert ours == {instance}, (
            f"Events from {ours - {instance}}: another cluster-wide operator is running against "
            "this cluster, so this run cannot tell which one did the work"
        )
    except AssertionError as exc:  # reported after the log's permission errors, if any
        failure = exc
    finally:
        operator.send_signal(signal.SIGINT)  # kopf stops gracefully
        try:
            operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
    log_text = log_path.read_text()
    denied = [line for line in log_text.splitlines() if DENIED.search(line)]
    assert not denied, "permission errors in the operator log:\n" + "\n".join(denied)
    if failure is not None:
        raise failure
    assert "controller started" in log_text, log_text[-3000:]


def _can_i(cluster: Cluster, verb: str, resource: str, namespace: str = "") -> bool:
    """A SubjectAccessReview for the ServiceAccount (what `kubectl auth can-i --as` asks, but
    exact for groups the server does not serve, such as Gateway API without its CRDs).
    `resource` is `plural[.group][/subresource]`; no namespace: all namespaces."""
    plural_group, _, subresource = resource.partition("/")
    plural, _, group = plural_group.partition(".")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=SA,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=plural,
                subresource=subresource,
                namespace=namespace,
            ),
        )
    )
    result = client.AuthorizationV1Api(cluster.api).create_subject_access_review(review)
    return bool(result.status.allowed)


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "configmaps"),
        ("delete", "namespaces"),
        ("list", "namespaces"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("create", "serviceaccounts/token"),
        ("impersonate", "serviceaccounts"),
        ("update", "modeldeployments.canarium.dev"),
        ("patch", "modeldeployments.canarium.dev"),
        ("delete", "modeldeployments.canarium.dev"),
        ("patch", "rolloutpolicies.canarium.dev"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "deployments.apps"),
        ("deletecollection", "deployments.apps"),
        ("get", "nodes"),
        ("get", "nodes/proxy"),
        ("delete", "events"),
    ],
)
def test_operator_cannot(cluster: Cluster, verb: str, resource: str) -> None:
    assert not _can_i(cluster, verb, resource), f"{SA} can {verb} {resource}"
    assert not _can_i(cluster, verb, resource, NAMESPACE)


@pytest.mark.usefixtures("installed")
def test_operator_can_what_it_needs(cluster: Cluster) -> None:
    needed = [
        ("watch", "modeldeployments.canarium.dev"),
        ("patch", "modeldeployments.canarium.dev/status"),
        ("watch", "rolloutpolicies.canarium.dev"),
        ("patch", "deployments.apps"),
        ("create", "services"),
        ("delete", "horizontalpodautoscalers.autoscaling"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("get", "pods/proxy"),
        ("create", "events"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    missing = [(v, r) for v, r in needed if not _can_i(cluster, v, r)]
    assert not missing, missing
