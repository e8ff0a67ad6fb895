"""manifests/install and manifests/monitoring, checked offline against the code they serve.

The RBAC is derived from what the operator does (kopf's registered watches, the kinds the
controller applies, lists and deletes, the status subresource, Events); the monitoring PromQL
only names metrics and labels that the operator and the model server really export. The e2e
suite (tests/e2e/test_install.py) applies the same manifests to a real API server.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium import controller, crdgen, kube, render
from canarium_serving import contract
from canarium_serving import metrics_contract as mc

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "manifests" / "install"
MONITORING = REPO / "manifests" / "monitoring"
NAMESPACE = "canarium-system"
SERVICE_ACCOUNT = "canarium"
OPERATOR_IMAGE = "ghcr.io/canarium-dev/canarium-operator:0.1.0"
SERVING_IMAGE = "ghcr.io/canarium-dev/canarium-serving:0.1.0"

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization(directory: Path) -> Doc:
    doc: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return doc


def _resources(directory: Path) -> list[Doc]:
    """The objects of a kustomization's own resource files (bases and generators excluded)."""
    docs: list[Doc] = []
    for entry in _kustomization(directory)["resources"]:
        path = directory / entry
        if path.is_file():
            docs.extend(_load(path))
    return docs


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- install ---------------------------------------------------------------------------------
def test_install_resources_exist_and_crds_come_from_crds_dir() -> None:
    kustomization = _kustomization(INSTALL)
    for entry in kustomization["resources"]:
        assert (INSTALL / entry).exists(), entry
    assert "../../crds" in kustomization["resources"], "the CRDs have one source: crds/"
    crd_kustomization = yaml.safe_load((REPO / "crds" / "Kustomization").read_text())
    assert sorted(crd_kustomization["resources"]) == sorted(crdgen.render_crds()), (
        "crds/Kustomization must list exactly the generated CRD files"
    )


def test_namespace_enforces_restricted_pod_security() -> None:
    ns = _one(_resources(INSTALL), "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _rules() -> list[Doc]:
    role = _one(_resources(INSTALL), "ClusterRole", "canarium")
    rules: list[Doc] = role["rules"]
    return rules


def _granted(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in _rules():
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def test_rbac_has_no_wildcards_and_nothing_sensitive() -> None:
    forbidden_verbs = {"*", "escalate", "bind", "impersonate", "deletecollection", "update"}
    sensitive = {"secrets", "serviceaccounts/token", "pods/exec", "pods/attach", "nodes/proxy"}
    for rule in _rules():
        assert "*" not in rule["apiGroups"]
        assert "*" not in rule["resources"]
        assert not set(rule["resources"]) & sensitive, rule
        assert "resourceNames" not in rule or rule["resourceNames"]
        if rule["resources"] != ["modeldeployments/finalizers"]:
            assert not set(rule["verbs"]) & forbidden_verbs, rule
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule
    # Nothing is written to the user's spec; status only through its subresource.
    assert _granted("canarium.dev", "modeldeployments") == {"get", "list", "watch"}
    assert _granted("canarium.dev", "rolloutpolicies") == {"get", "list", "watch"}
    assert _granted("canarium.dev", "modeldeployments/status") == {"patch"}
    assert _granted("canarium.dev", "rolloutpolicies/status") == {"patch"}  # Ready/Stalled


def test_rbac_binds_the_operator_service_account() -> None:
    docs = _resources(INSTALL)
    binding = _one(docs, "ClusterRoleBinding", "canarium")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "canarium",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]
    sa = _one(docs, "ServiceAccount", SERVICE_ACCOUNT)
    assert sa["metadata"]["namespace"] == NAMESPACE


def test_rbac_covers_every_watch_kopf_registers() -> None:
    import canarium.handlers  # noqa: F401  (registers the handlers)
    import kopf

    selectors = {h.selector for h in kopf.get_default_registry()._watching.get_all_handlers()}
    assert selectors
    for selector in selectors:
        plural = selector.plural or selector.any_name
        assert {"list", "watch"} <= _granted(selector.group, plural), selector
    # kopf's resource scanning (the operator keeps settings.scanning enabled) and its Events.
    assert {"list", "watch"} <= _granted("apiextensions.k8s.io", "customresourcedefinitions")
    assert "create" in _granted("", "events")


def test_rbac_covers_what_the_controller_does() -> None:
    for api_version, kind in controller.CHILD_KINDS:
        plural = kube.PLURALS[(api_version, kind)]
        verbs = _granted(_group(api_version), plural)
        # listed at start-up, server-side applied (PATCH; create when new), deleted
        assert {"list", "watch", "create", "patch", "delete"} <= verbs, (kind, verbs)
    # Every kind the client knows is covered by some rule (a new kind needs a new rule).
    for api_version, kind in kube.PLURALS:
        assert _granted(_group(api_version), kube.PLURALS[(api_version, kind)]), kind
    assert "update" in _granted("canarium.dev", "modeldeployments/finalizers"), (
        "children set blockOwnerDeletion on their ModelDeployment"
    )


def _operator_deployment() -> Doc:
    return _one(_resources(INSTALL), "Deployment", "canarium-operator")


def test_operator_deployment_meets_restricted_pod_security() -> None:
    deployment = _operator_deployment()
    assert deployment["metadata"]["namespace"] == NAMESPACE
    # Active/standby behind the Lease: a rolling update starts the new replica first.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")
    assert not pod.get("hostIPC")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged") is not True
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_operator_container_runs_the_operator() -> None:
    pod = _operator_deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == OPERATOR_IMAGE
    assert container["args"] == ["run", "--leader-elect"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["CANARIUM_SERVING_IMAGE"]["value"] == SERVING_IMAGE
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 8080
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert probe["port"] in ("healthz", 8081)
    assert ports.get("healthz") == 8081
    # The defaults of `canarium run` are what the manifest relies on.
    from canarium.cli import build_parser

    args = build_parser().parse_args(container["args"])
    assert args.metrics_port == 8080
    assert args.liveness.endswith(":8081/healthz")
    assert not args.namespace, "cluster-wide, as the ClusterRole assumes"


def test_metrics_service_selects_the_operator() -> None:
    docs = _resources(INSTALL)
    service = _one(docs, "Service", "canarium-operator-metrics")
    labels = _operator_deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"


# --- monitoring ------------------------------------------------------------------------------
def _monitoring() -> list[Doc]:
    return _resources(MONITORING)


def _dashboard() -> Doc:
    (generator,) = _kustomization(MONITORING)["configMapGenerator"]
    (entry,) = generator["files"]
    key, _, path = entry.partition("=")
    assert key.endswith(".json")
    doc: Doc = json.loads((MONITORING / path).read_text())
    return doc


def test_service_monitor_scrapes_the_operator_metrics_service() -> None:
    monitor = _one(_monitoring(), "ServiceMonitor")
    service = _one(_resources(INSTALL), "Service", "canarium-operator-metrics")
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_pod_monitor_scrapes_the_serving_pods() -> None:
    monitor = _one(_monitoring(), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"] == {render.LABEL_MANAGED_BY: render.MANAGER}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == contract.HTTP_PORT_NAME
    assert endpoint["path"] == contract.METRICS_PATH


def test_dashboard_configmap_is_picked_up_by_grafana() -> None:
    (generator,) = _kustomization(MONITORING)["configMapGenerator"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    assert generator["options"]["disableNameSuffixHash"] is True
    dashboard = _dashboard()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        assert all(t["expr"] for t in panel["targets"])
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needle in (
        mc.REQUESTS.series,
        'code=~"5.."',
        "histogram_quantile(0.99",
        mc.REQUEST_DURATION.series,
        mc.PREDICTION_CLASS.series,
        "canarium_reconcile_total",
        "canarium_reconcile_duration_seconds_bucket",
        "canarium_modeldeployments",
    ):
        assert needle in exprs, needle


def _alerts() -> dict[str, Doc]:
    rule = _one(_monitoring(), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_prometheus_rule_has_the_alerts() -> None:
    alerts = _alerts()
    assert "canarium_reconcile_errors_total" in alerts["CanariumReconcileErrors"]["expr"]
    assert (
        alerts["CanariumModelDeploymentDegraded"]["expr"].strip()
        == 'canarium_modeldeployments{phase="Degraded"} > 0'
    )
    assert f'{mc.REQUESTS.series}{{code=~"5.."}}' in alerts["CanariumServingErrorRate"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]


# Metric families -> label names, from the code that exports them.
@functools.cache
def _exported() -> dict[str, set[str]]:
    """Every sample name the operator and the model server export, with its labels."""
    families: dict[str, set[str]] = {}
    # The model server's families are the metrics contract's (tests/unit/test_metrics_contract.py
    # checks that the server exposes exactly those).
    for family in mc.FAMILIES:
        _add_family(families, family.name, family.type, {*mc.BASE_LABELS, *family.labels})
    # The operator's metrics are ordinary prometheus_client metrics in the default registry.
    from canarium import metrics as operator_metrics
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    for metric in vars(operator_metrics).values():
        if isinstance(metric, MetricWrapperBase):
            _add_family(families, metric._name, metric._type, set(metric._labelnames))
    for family in REGISTRY.collect():  # custom collectors (ModelDeployments by phase, ...)
        if family.name.startswith("canarium_"):
            # the labels a family declares (it may have no samples yet), and those sampled
            labels = set(getattr(family, "_labelnames", ()))
            labels |= {label for sample in family.samples for label in sample.labels}
            _add_family(families, family.name, family.type, labels)
    return families


def _add_family(families: dict[str, set[str]], name: str, kind: str, labels: set[str]) -> None:
    if kind == "counter":
        families[name.removesuffix("_total") + "_total"] = labels
    elif kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            families[name + suffix] = labels | {"le"}
    else:
        families[name] = labels


# Labels Prometheus itself attaches to every scraped series (target labels).
TARGET_LABELS = {"job", "instance", "pod", "container", "namespace", "service", "endpoint"}
SELECTOR = re.compile(r"\b(canarium_[a-z_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|ignoring|on|group_left|group_right)\s*\(([^)]*)\)")


def _promql() -> list[str]:
    exprs = [str(a["expr"]) for a in _alerts().values()]
    dashboard = _dashboard()
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def test_promql_names_only_exported_metrics_and_labels() -> None:
    families = _exported()
    assert mc.REQUESTS.series in families
    assert mc.REQUEST_DURATION.series in families
    assert mc.PREDICTION_CLASS.series in families
    assert "canarium_reconcile_errors_total" in families
    known_labels = set().union(*families.values()) | TARGET_LABELS
    for expr in _promql():
        used = SELECTOR.findall(expr)
        assert used or expr.startswith("absent(up{"), expr
        for name, matchers in used:
            assert name in families, f"{name} is not exported (in {expr!r})"
            for label in MATCHER.findall(matchers or ""):
                assert label in families[name] | TARGET_LABELS, f"{name} has no label {label}"
        for group in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in known_labels, f"unknown label {label!r} in {expr!r}"


def test_legends_and_annotations_name_labels_the_query_keeps() -> None:
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            kept = {x.strip() for g in GROUPING.findall(target["expr"]) for x in g.split(",")}
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]):
                assert label in kept, f"{label!r} of the legend is not kept by {target['expr']!r}"
    for name, alert in _alerts().items():
        kept = {x.strip() for g in GROUPING.findall(alert["expr"]) for x in g.split(",")}
        for metric, _ in SELECTOR.findall(alert["expr"]):
            kept |= _exported().get(metric, set())
        kept |= TARGET_LABELS if "by (" not in alert["expr"] else set()
        text = " ".join(alert["annotations"].values())
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in kept, f"{name}: $labels.{label} is not kept by its expression"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    rule = _one(_monitoring(), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_replicas_may_use_their_lease_and_no_other_and_a_drain_keeps_one() -> None:
    from canarium.cli import build_parser

    docs = _resources(INSTALL)
    (container,) = _operator_deployment()["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.leader_elect is True
    role = _one(docs, "Role", "canarium-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    by_name = [r for r in role["rules"] if r.get("resourceNames")]
    assert by_name == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [args.leader_election_id],
            "verbs": ["get", "update"],
        }
    ]
    assert [r["verbs"] for r in role["rules"] if not r.get("resourceNames")] == [["create"]]
    binding = _one(docs, "RoleBinding", "canarium-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "canarium-leader-election",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]
    pdb = _one(docs, "PodDisruptionBudget", "canarium-operator")
    pod_labels = _operator_deployment()["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
