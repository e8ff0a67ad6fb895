"""charts/canarium: lint, the values it takes, and the same objects as manifests/install.

Helm is the pinned one (hack/helm.sh builds it on first use). The comparison with the
kustomize install renders manifests/install with the pinned kubectl's kustomize (built with the
local control plane); tests/e2e/test_helm.py applies the chart to a real API server.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium import __version__
from canarium.cli import build_parser

from tests.helm import CHART, REPO, Doc, helm, template

INSTALL = REPO / "manifests" / "install"
MONITORING = REPO / "manifests" / "monitoring"
NAMESPACE = "canarium-system"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container(docs: list[Doc]) -> Doc:
    deployment = _one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Doc = container
    return result


def _env(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _args(container: Doc) -> Any:
    return build_parser().parse_args(container["args"])


def _namespaces(container: Doc) -> list[str]:
    """The namespaces `canarium run` watches (none given: all), as cli.py reads them."""
    given = getattr(_args(container), "namespace", None) or []
    return [given] if isinstance(given, str) else list(given)


# --- the chart itself --------------------------------------------------------------------
def test_helm_lint_strict() -> None:
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out, out


def test_chart_version_is_the_operators() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    container = _container(template())
    assert container["image"] == f"ghcr.io/canarium-dev/canarium-operator:{__version__}"
    serving = _env(container)["CANARIUM_SERVING_IMAGE"]
    assert serving == f"ghcr.io/canarium-dev/canarium-serving:{__version__}"


def test_chart_crds_are_the_generated_ones() -> None:
    """crds/ is the one source (`make crds` writes both): the chart's copy must not drift."""
    ours = sorted(p.name for p in (CHART / "crds").iterdir())
    theirs = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert ours == theirs
    for name in ours:
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text(), (
            f"charts/canarium/crds/{name} differs from crds/{name}: run `make crds`"
        )


def test_chart_monitoring_files_are_manifests_monitorings() -> None:
    pairs = [
        ("files/prometheusrule.yaml", "prometheusrule.yaml"),
        ("files/dashboards/canarium.json", "dashboards/canarium.json"),
    ]
    for ours, theirs in pairs:
        assert (CHART / ours).read_text() == (MONITORING / theirs).read_text(), (
            f"charts/canarium/{ours} differs from manifests/monitoring/{theirs}: copy it over"
        )


def test_defaults_render_the_install_objects_and_no_more() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in template())
    assert kinds == [
        ("ClusterRole", "canarium"),
        ("ClusterRole", "canarium-aggregate-to-admin"),
        ("ClusterRole", "canarium-aggregate-to-edit"),
        ("ClusterRole", "canarium-aggregate-to-view"),
        ("ClusterRoleBinding", "canarium"),
        ("Deployment", "canarium-operator"),
        ("PodDisruptionBudget", "canarium-operator"),
        ("Role", "canarium-leader-election"),
        ("RoleBinding", "canarium-leader-election"),
        ("Service", "canarium-operator-metrics"),
        ("ServiceAccount", "canarium"),
    ]
    crds = [d for d in template(crds=True) if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == [
        "modeldeployments.canarium.dev",
        "modelretrainings.canarium.dev",
        "rolloutpolicies.canarium.dev",
    ]


def test_another_release_and_namespace_share_no_cluster_scoped_name() -> None:
    docs = template(release="team-a", namespace="ml")
    for doc in docs:
        name = doc["metadata"]["name"]
        assert name.startswith("team-a-canarium"), name
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            continue
        assert doc["metadata"]["namespace"] == "ml", doc["kind"]
    binding = _one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "team-a-canarium", "namespace": "ml"}
    ]
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "team-a-canarium"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "team-a"
    service = _one(docs, "Service")
    assert service["spec"]["selector"] == selector


# --- values ------------------------------------------------------------------------------
def test_both_images_take_repository_tag_and_digest() -> None:
    container = _container(
        template(
            "image.repository=registry.example.com/ml/operator",
            "image.tag=1.2.3",
            "servingImage.repository=registry.example.com/ml/serving",
            "servingImage.tag=2.0",
        )
    )
    assert container["image"] == "registry.example.com/ml/operator:1.2.3"
    assert _env(container)["CANARIUM_SERVING_IMAGE"] == "registry.example.com/ml/serving:2.0"
    # A digest wins over the tag.
    container = _container(
        template(
            f"image.digest={DIGEST}",
            "image.tag=ignored",
            f"servingImage.digest={DIGEST}",
            "image.pullPolicy=Always",
        )
    )
    assert container["image"] == f"ghcr.io/canarium-dev/canarium-operator@{DIGEST}"
    assert container["imagePullPolicy"] == "Always"
    serving = _env(container)["CANARIUM_SERVING_IMAGE"]
    assert serving == f"ghcr.io/canarium-dev/canarium-serving@{DIGEST}"


def test_defaults_run_cluster_wide_with_metrics_at_info() -> None:
    args = _args(_container(template()))
    assert args.command == "run"
    assert _namespaces(_container(template())) == []
    assert args.metrics_port == 8080
    assert args.verbose is False


def test_log_level_debug_is_verbose() -> None:
    assert _args(_container(template("logLevel=debug"))).verbose is True


def test_metrics_port_and_off() -> None:
    docs = template("metrics.port=9090")
    container = _container(docs)
    assert _args(container).metrics_port == 9090
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert _one(docs, "Service")["spec"]["ports"][0]["port"] == 9090
    docs = template("metrics.enabled=false")
    container = _container(docs)
    assert _args(container).metrics_port == 0
    assert [p["name"] for p in container["ports"]] == ["healthz"]
    assert not [d for d in docs if d["kind"] == "Service"]


def test_watched_namespaces_get_role_bindings_and_no_cluster_wide_one() -> None:
    docs = template("watchNamespaces={team-a,team-b}")
    assert _namespaces(_container(docs)) == ["team-a", "team-b"]
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] == "canarium"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "canarium", "namespace": NAMESPACE}
        ]
    # Cluster-wide: only the read-only discovery kopf needs (CRDs; namespaces, as it serves a
    # namespace list then), not the operator's own ClusterRole.
    (cluster_binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert cluster_binding["roleRef"]["name"] == "canarium-discovery"
    discovery = _one(docs, "ClusterRole", "canarium-discovery")
    for rule in discovery["rules"]:
        assert set(rule["verbs"]) == {"list", "watch"}
    assert {r for rule in discovery["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }


def _secret_rules(docs: list[Doc]) -> list[Doc]:
    return [
        rule
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
        for rule in d["rules"]
        if "secrets" in rule["resources"]
    ]


def test_secrets_are_readable_only_when_enabled() -> None:
    assert _secret_rules(template()) == []
    assert _secret_rules(template("watchNamespaces={a}")) == []
    docs = template("rbac.secrets.read=true")
    (rule,) = _secret_rules(docs)
    assert rule["verbs"] == ["get"]
    assert "resourceNames" not in rule
    binding = _one(docs, "ClusterRoleBinding", "canarium-secrets")
    assert binding["roleRef"]["name"] == "canarium-secrets"
    # Narrowed: some Secrets by name, in the watched namespaces only.
    docs = template("rbac.secrets.read=true", "rbac.secrets.resourceNames={s3-keys}",
                    "watchNamespaces={a}")  # fmt: skip
    (rule,) = _secret_rules(docs)
    assert rule["resourceNames"] == ["s3-keys"]
    assert not [d for d in docs if d["metadata"]["name"] == "canarium-secrets"
                and d["kind"] == "ClusterRoleBinding"]  # fmt: skip
    binding = _one(docs, "RoleBinding", "canarium-secrets")
    assert binding["metadata"]["namespace"] == "a"


def test_resources_scheduling_and_extra_env() -> None:
    docs = template(
        "resources.limits.memory=1Gi",
        "resources.requests.cpu=250m",
        "nodeSelector.pool=system",
        "extraEnv[0].name=CANARIUM_PROGRESS_DEADLINE_SECONDS",
        "extraEnv[0].value=900",
        "podLabels.team=ml",
        "serviceAccount.annotations.iam\\.example\\.com/role=canarium",
    )
    container = _container(docs)
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert _env(container)["CANARIUM_PROGRESS_DEADLINE_SECONDS"] == "900"
    pod = _one(docs, "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["metadata"]["labels"]["team"] == "ml"
    sa = _one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"iam.example.com/role": "canarium"}


def test_namespace_object_enforces_restricted_when_created() -> None:
    assert not [d for d in template() if d["kind"] == "Namespace"]
    ns = _one(template("namespace.create=true", namespace="ml"), "Namespace")
    assert ns["metadata"]["name"] == "ml"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["logLevel=warning"], "/logLevel"),
        (["image.digest=sha256:abc"], "/image/digest"),
        (["servingImage.tag=bad tag"], "/servingImage/tag"),
        (["imagee.tag=1"], "'imagee' not allowed"),
        (["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["metrics.port=8081"], "8081 is the operator's liveness endpoint"),
        (
            ["monitoring.serviceMonitor.enabled=true", "metrics.enabled=false"],
            "monitoring.serviceMonitor.enabled needs metrics.enabled",
        ),
    ],
)
def test_bad_values_are_refused_with_the_reason(values: list[str], message: str) -> None:
    args = ["template", "canarium", str(CHART)]
    for value in values:
        args += ["--set", value]
    proc = helm(*args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# --- monitoring --------------------------------------------------------------------------
MONITORS = (
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
)


def test_monitoring_is_off_by_default_and_complete_when_on() -> None:
    kinds = {d["kind"] for d in template()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    docs = template(*MONITORS)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"):
        _one(docs, kind)


def test_kube_prometheus_stack_release_label_on_every_monitor() -> None:
    docs = template(
        *MONITORS,
        "monitoring.labels.release=kube-prometheus-stack",
        "monitoring.serviceMonitor.labels.extra=yes",
    )
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert _one(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert _one(docs, "ServiceMonitor")["metadata"]["labels"]["extra"] == "yes"
    assert "extra" not in _one(docs, "PodMonitor")["metadata"]["labels"]
    dashboard = _one(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    # The labels never reach a selector (they would select nothing).
    monitor = _one(docs, "ServiceMonitor")
    assert "release" not in monitor["spec"]["selector"]["matchLabels"]


def test_service_monitor_keeps_the_models_namespace_label() -> None:
    docs = template(*MONITORS, release="team-a", namespace="ml")
    monitor = _one(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    service = _one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    pod_monitor = _one(docs, "PodMonitor")
    assert "honorLabels" not in pod_monitor["spec"]["podMetricsEndpoints"][0]


def test_prometheus_rule_names_this_releases_service_and_namespace() -> None:
    docs = template(*MONITORS, release="team-a", namespace="ml")
    rule = _one(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    down = alerts["CanariumOperatorDown"]["expr"]
    assert 'namespace="ml"' in down
    assert f'service="{_one(docs, "Service")["metadata"]["name"]}"' in down
    assert "canarium-system" not in json.dumps(rule)
    # Prometheus' own templates in the texts pass through Helm untouched.
    assert "{{ $labels.pod }}" in alerts["CanariumReconcileErrors"]["annotations"]["description"]
    # Everything else is manifests/monitoring's rule.
    theirs = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        g["name"] for g in theirs["spec"]["groups"]
    ]
    theirs_alerts = {r["alert"]: r for g in theirs["spec"]["groups"] for r in g["rules"]}
    for name, alert in theirs_alerts.items():
        if name != "CanariumOperatorDown":
            assert alerts[name]["expr"] == alert["expr"], name


def test_dashboard_is_manifests_monitorings() -> None:
    dashboard = _one(template(*MONITORS), "ConfigMap")
    ours = json.loads(dashboard["data"]["canarium.json"])
    assert ours == json.loads((MONITORING / "dashboards" / "canarium.json").read_text())


# --- the same objects as the kustomize install --------------------------------------------
@functools.cache
def _kubectl() -> str:
    path = subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "kubectl"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(path).is_file():
        pytest.skip("the pinned kubectl is not built (make control-plane)")
    return path


def _kustomize(directory: Path) -> list[Doc]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_key(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_chart_and_kustomize_render_the_same_rbac_and_crds() -> None:
    ours = _by_key(template("namespace.create=true", crds=True))
    theirs = _by_key(_kustomize(INSTALL))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        kind = key[0]
        if kind == "ClusterRole":
            assert ours[key]["rules"] == theirs[key]["rules"], key
        elif kind == "ClusterRoleBinding":
            assert ours[key]["roleRef"] == theirs[key]["roleRef"], key
            assert ours[key]["subjects"] == theirs[key]["subjects"], key
        elif kind == "CustomResourceDefinition":
            # kustomize adds its part-of label; Helm installs crds/ files as they are.
            assert ours[key]["spec"] == theirs[key]["spec"], key
        elif kind == "Namespace":
            labels = theirs[key]["metadata"]["labels"]
            assert labels.items() <= ours[key]["metadata"]["labels"].items()
        for label in ("app.kubernetes.io/part-of", "app.kubernetes.io/name"):
            if kind != "CustomResourceDefinition" and label in theirs[key]["metadata"]["labels"]:
                assert (
                    ours[key]["metadata"]["labels"][label]
                    == (theirs[key]["metadata"]["labels"][label])
                ), (key, label)


def test_chart_and_kustomize_run_the_same_operator_pod() -> None:
    ours = _one(template(), "Deployment")
    theirs = _one(_kustomize(INSTALL), "Deployment")
    assert ours["spec"]["strategy"] == theirs["spec"]["strategy"]
    assert ours["spec"]["replicas"] == theirs["spec"]["replicas"]
    our_pod, their_pod = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    (our_container,) = our_pod.pop("containers")
    (their_container,) = their_pod.pop("containers")
    # The same anti-affinity; the chart's selector adds the release, as its Deployment's does.
    our_term = our_pod.pop("affinity")["podAntiAffinity"]
    their_term = their_pod.pop("affinity")["podAntiAffinity"]
    for terms in (our_term, their_term):
        (preferred,) = terms["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (ours_preferred,) = our_term["preferredDuringSchedulingIgnoredDuringExecution"]
    selects = ours_preferred["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selects == ours["spec"]["selector"]["matchLabels"]
    assert our_pod == their_pod
    # Same flags in effect, though the chart spells out the metrics port.
    assert vars(_args(our_container)) == vars(_args(their_container))
    assert _env(our_container) == _env(their_container)
    for field in ("args", "env"):
        our_container.pop(field)
        their_container.pop(field)
    assert our_container == their_container
    # The metrics Service: the same ports (the chart's selector adds the release).
    our_service = _one(template(), "Service")["spec"]
    their_service = _one(_kustomize(INSTALL), "Service")["spec"]
    assert our_service["ports"] == their_service["ports"]
    assert their_service["selector"].items() <= our_service["selector"].items()


def test_aggregated_roles_can_be_left_out() -> None:
    names = [d["metadata"]["name"] for d in template("rbac.aggregateToDefaultRoles=false")]
    assert not [n for n in names if "aggregate" in n]


# --- HA ----------------------------------------------------------------------------------
def test_replicas_run_behind_a_lease_the_role_names_and_a_drain_keeps_one() -> None:
    docs = template(release="team-a", namespace="ml")
    args = _args(_container(docs))
    assert args.leader_elect is True
    assert args.leader_election_id == "team-a-canarium-operator"
    role = _one(docs, "Role", "team-a-canarium-leader-election")
    assert role["metadata"]["namespace"] == "ml"
    assert [r.get("resourceNames") for r in role["rules"]] == [["team-a-canarium-operator"], None]
    binding = _one(docs, "RoleBinding", "team-a-canarium-leader-election")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "team-a-canarium", "namespace": "ml"}
    ]
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }


def test_lease_timings_reach_the_operator_and_unsafe_ones_are_refused() -> None:
    args = _args(
        _container(
            template(
                "leaderElection.leaseDuration=30",
                "leaderElection.renewDeadline=20",
                "leaderElection.retryPeriod=4",
            )
        )
    )
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (30, 20, 4)
    failed = helm(
        "template", "canarium", str(CHART), "--set", "leaderElection.renewDeadline=20", check=False
    )
    assert failed.returncode != 0
    assert "retryPeriod < renewDeadline < leaseDuration" in failed.stderr


def test_one_replica_without_a_lease_is_recreated_and_two_without_one_are_refused() -> None:
    docs = template(
        "leaderElection.enabled=false", "replicaCount=1", "podDisruptionBudget.enabled=false"
    )
    assert _args(_container(docs)).leader_elect is False
    deployment = _one(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in docs if d["kind"] in ("Role", "PodDisruptionBudget")]
    failed = helm(
        "template", "canarium", str(CHART), "--set", "leaderElection.enabled=false", check=False
    )
    assert failed.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled" in failed.stderr
