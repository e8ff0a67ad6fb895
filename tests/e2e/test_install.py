"""manifests/install and manifests/monitoring against a real API server, and the installed
operator running from its image on the real node under its ServiceAccount: its RBAC is enough
(the shipped example serves correct predictions, revisions are replaced, autoscalers dropped,
Events recorded, with no 403 in the log) and no more (a SubjectAccessReview refuses what it must
not do). The install is the session's (conftest `installed_operator`)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import KWOK_PLACEMENT, REAL_NODE, REPO, Cluster, wait_until
from tests.e2e.gomod import module_dir, versions
from tests.e2e.incluster import InstalledOperator
from tests.e2e.models import E2EModels

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
    assert kinds.count("CustomResourceDefinition") == 3
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
def installed(installed_operator: InstalledOperator) -> InstalledOperator:
    """manifests/install applied for real: the operator's pod runs on the real node."""
    return installed_operator


def _metric(url: str, name: str, labels: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _mdep(name: str, version: str, autoscaling: bool) -> dict[str, Any]:
    """A ModelDeployment whose pods only need to exist (kwok's simulated nodes)."""
    serving: dict[str, Any] = {"replicas": 2, **KWOK_PLACEMENT}
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


def test_operator_pod_runs_restricted_on_the_real_node(
    cluster: Cluster, installed: InstalledOperator
) -> None:
    pod = cluster.get_json("pod", "-n", NAMESPACE, installed.pod())
    assert pod["spec"]["nodeName"] == REAL_NODE
    assert pod["spec"]["serviceAccountName"] == "canarium"
    labels = cluster.get_json("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True
    assert container["image"].endswith("canarium-operator:0.1.0")
    assert container["restartCount"] == 0, installed.log()[-3000:]


def test_example_serves_correct_predictions_through_its_service(
    cluster: Cluster, namespace: str, installed: InstalledOperator, models: E2EModels
) -> None:
    """The shipped example, applied unchanged in a namespace that enforces Pod Security
    "restricted", with its model in a ConfigMap as the example says: real serving pods answer
    V2 requests sent to the Service's ClusterIP with the model's own predictions."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.kubectl(
        "create", "configmap", "iris-model", "-n", namespace,
        f"--from-file=model.onnx={models.good_v1.path}",
    )  # fmt: skip
    cluster.apply((EXAMPLES / "rolloutpolicy.yaml").read_text(), namespace)
    cluster.apply((EXAMPLES / "iris.yaml").read_text(), namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "mdep/iris", "--timeout=180s",
        timeout=190,
    )  # fmt: skip
    pods = cluster.get_json("pods", "-n", namespace, "-l", "canarium.dev/deployment=iris")
    assert {p["spec"]["nodeName"] for p in pods["items"]} == {REAL_NODE}
    svc = cluster.get_json("service", "iris", "-n", namespace)
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    x = models.x[::5]
    body = {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32",
             "data": x.reshape(-1).tolist()}
        ]
    }  # fmt: skip

    def infer() -> dict[str, Any] | None:
        # kube-proxy programs the endpoints a moment after the pods turn Ready.
        try:
            got: dict[str, Any] = httpx.post(
                f"{url}/v2/models/iris/infer", json=body, timeout=10
            ).json()
            return got
        except httpx.ConnectError:
            return None

    answer = wait_until(infer, timeout=15, what="an answer through the ClusterIP")
    labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
    assert labels == models.good_v1.predict(x)
    assert answer["model_version"] == "1.0.0"
    status = cluster.get_json("mdep", "iris", "-n", namespace)["status"]
    assert status["phase"] == "Healthy"
    assert status["ready"] == "4/4"


def test_operator_rbac_is_enough_and_no_more(
    cluster: Cluster, namespace: str, installed: InstalledOperator
) -> None:
    """The installed operator, under its ServiceAccount's own token in its pod, does its work
    (revisions replaced, autoscalers dropped, Events recorded) with no permission error."""
    cluster.apply(_mdep("plain", "1", autoscaling=True), namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "mdep/plain", "--timeout=60s")
    hpas = cluster.kubectl("get", "hpa", "-n", namespace, "-o", "name").stdout.split()
    assert len(hpas) == 1, hpas
    cluster.apply(_mdep("plain", "2", autoscaling=False), namespace)

    def replaced() -> bool:
        deps = cluster.get_json("deploy", "-n", namespace, "-l", "canarium.dev/deployment=plain")
        hpas = cluster.get_json("hpa", "-n", namespace)
        mdep = cluster.get_json("mdep", "-n", namespace, "plain")
        return (
            len(deps["items"]) == 1
            and not hpas["items"]
            and mdep.get("status", {}).get("stable", {}).get("modelVersion") == "2"
        )

    wait_until(replaced, timeout=60, what="revision 1 replaced by 2, HPA deleted")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "mdep/plain", "--timeout=60s")
    url = installed.metrics_url()
    assert _metric(url, "canarium_reconcile_total", 'kind="ModelDeployment"') > 0
    assert _metric(url, "canarium_reconcile_errors_total", 'kind="ModelDeployment"') == 0
    events = cluster.get_json("events", "-n", namespace)["items"]
    ours = {e.get("reportingInstance") for e in events if e.get("reportingComponent") == "canarium"}
    assert ours == {installed.pod()}
    log_text = installed.log()
    denied = [line for line in log_text.splitlines() if DENIED.search(line)]
    assert not denied, "permission errors in the operator log:\n" + "\n".join(denied)


def _can_i(cluster: Cluster, verb: str, resource: str, namespace: str = "", user: str = SA) -> bool:
    """A SubjectAccessReview for the ServiceAccount, or `user` (what `kubectl auth can-i --as`
    asks, but exact for groups the server does not serve, such as Gateway API without its
    CRDs). `resource` is `plural[.group][/subresource]`; no namespace: all namespaces."""
    plural_group, _, subresource = resource.partition("/")
    plural, _, group = plural_group.partition(".")
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"] if user == SA else []
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
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
        ("patch", "modelretrainings.canarium.dev"),
        ("update", "jobs.batch"),
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
        ("patch", "rolloutpolicies.canarium.dev/status"),
        ("watch", "rolloutpolicies.canarium.dev"),
        ("patch", "deployments.apps"),
        ("create", "services"),
        ("delete", "horizontalpodautoscalers.autoscaling"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("get", "pods/proxy"),
        ("create", "events"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("watch", "pods"),
        ("watch", "modelretrainings.canarium.dev"),
        ("patch", "modelretrainings.canarium.dev/status"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("watch", "jobs.batch"),
    ]
    missing = [(v, r) for v, r in needed if not _can_i(cluster, v, r)]
    assert not missing, missing


@pytest.mark.usefixtures("installed")
def test_namespace_roles_grant_canarium_through_aggregation(
    cluster: Cluster, namespace: str
) -> None:
    """The cluster's own `edit` and `view` roles, bound in one namespace, reach ModelDeployments
    and RolloutPolicies (aggregate-roles.yaml) there and nowhere else; no role writes status."""
    for role, user in (("edit", "dev@example.com"), ("view", "viewer@example.com")):
        cluster.kubectl(
            "create", "rolebinding", f"{role}-binding", f"--clusterrole={role}",
            f"--user={user}", "-n", namespace,
        )  # fmt: skip
    mdeps, rpols = "modeldeployments.canarium.dev", "rolloutpolicies.canarium.dev"

    def aggregated() -> bool:  # the controller-manager aggregates the rules shortly after
        return _can_i(cluster, "create", mdeps, namespace, "dev@example.com")

    wait_until(aggregated, timeout=30, what="edit may create ModelDeployments")
    dev, viewer = "dev@example.com", "viewer@example.com"
    assert _can_i(cluster, "patch", mdeps, namespace, dev)  # kubectl canarium promote
    assert _can_i(cluster, "delete", rpols, namespace, dev)
    assert _can_i(cluster, "patch", "modelretrainings.canarium.dev", namespace, dev)  # retrain
    assert _can_i(cluster, "get", "modelretrainings.canarium.dev", namespace, viewer)
    assert not _can_i(cluster, "patch", f"{mdeps}/status", namespace, dev)
    assert not _can_i(cluster, "create", mdeps, "default", dev)
    assert _can_i(cluster, "list", mdeps, namespace, viewer)
    assert _can_i(cluster, "get", rpols, namespace, viewer)
    assert not _can_i(cluster, "patch", mdeps, namespace, viewer)
