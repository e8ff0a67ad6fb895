"""The operator, installed in the cluster from its image, against the real API server
(issue: operator core). The serving pods here only need to exist and be Ready, so they are
placed on kwok's simulated nodes (KWOK_PLACEMENT); rollouts on real pods are test_rollout's."""

from __future__ import annotations

import threading
import time
from typing import Any

import yaml
from kubernetes import watch

from tests.e2e.cluster import KWOK_PLACEMENT, REPO, Cluster, wait_until
from tests.e2e.incluster import InstalledOperator

EXAMPLE = REPO / "manifests" / "examples" / "iris.yaml"


def iris(version: str = "1.0.0", replicas: int = 3) -> dict[str, Any]:
    """The shipped example, without a rollout policy (revisions replace each other)."""
    obj: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    obj["spec"]["model"]["version"] = version
    obj["spec"]["serving"]["replicas"] = replicas
    obj["spec"]["serving"].update(KWOK_PLACEMENT)
    obj["spec"].pop("rollout", None)
    return obj


def mdep(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any]:
    got: dict[str, Any] = cluster.get_json("mdep", name, "-n", namespace)
    return got


def revisions(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    deps = cluster.apps.list_namespaced_deployment(
        namespace, label_selector="canarium.dev/deployment=iris"
    ).items
    return {d.metadata.name: d for d in deps}


def wait_ready(cluster: Cluster, namespace: str, name: str = "iris") -> None:
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=60s"
    )


def wait_healthy_with(cluster: Cluster, namespace: str, version: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = mdep(cluster, namespace)
        status = obj.get("status") or {}
        ok = (
            status.get("phase") == "Healthy"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and (status.get("stable") or {}).get("modelVersion") == version
            and "canary" not in status
            and len(revisions(cluster, namespace)) == 1
        )
        return obj if ok else None

    return wait_until(check, timeout=60, what=f"Healthy with model {version}")


def wait_quiet(cluster: Cluster, namespace: str, seconds: float = 3.0) -> dict[str, Any]:
    """The ModelDeployment once nothing has written to it for `seconds`."""
    last = mdep(cluster, namespace)
    quiet_since = time.monotonic()
    deadline = quiet_since + 60
    while time.monotonic() - quiet_since < seconds:
        assert time.monotonic() < deadline, "the ModelDeployment never settled"
        time.sleep(0.3)
        now = mdep(cluster, namespace)
        if now["metadata"]["resourceVersion"] != last["metadata"]["resourceVersion"]:
            last, quiet_since = now, time.monotonic()
    return last


def test_example_becomes_ready_with_owned_children(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    cluster.apply(iris(), namespace)
    wait_ready(cluster, namespace)
    obj = mdep(cluster, namespace)
    uid = obj["metadata"]["uid"]
    status = obj["status"]
    assert status["phase"] == "Healthy"
    assert status["ready"] == "3/3"
    assert status["endpoint"] == f"http://iris.{namespace}.svc:80/v2/models/iris"
    assert status["grpcEndpoint"] == f"iris.{namespace}.svc:8081"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == obj["metadata"]["generation"]
    assert conditions["Degraded"]["status"] == "False"

    (dep,) = revisions(cluster, namespace).values()
    assert dep.status.ready_replicas == 3
    assert dep.metadata.owner_references[0].uid == uid
    assert dep.metadata.owner_references[0].controller is True
    services = {s.metadata.name: s for s in cluster.core.list_namespaced_service(namespace).items}
    assert set(services) == {"iris", "iris-stable", "iris-canary"}
    for svc in services.values():
        assert svc.metadata.owner_references[0].uid == uid
        # REST first (what the routers route), then V2 gRPC (h2c), each to the pods' named port.
        assert [
            (p.name, p.port, p.target_port, p.protocol, p.app_protocol) for p in svc.spec.ports
        ] == [
            ("http", 80, "http", "TCP", "http"),
            ("grpc", 8081, "grpc", "TCP", "kubernetes.io/h2c"),
        ]
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="canarium.dev/deployment=iris"
    )
    assert len([p for p in pods.items if p.status.phase == "Running"]) == 3

    # Fields the operator owns are under its own field manager (server-side apply).
    managers = {m.manager for m in dep.metadata.managed_fields}
    assert "canarium" in managers
    # kopf's bookkeeping stays out of the object: no finalizers, no kopf annotations.
    assert not obj["metadata"].get("finalizers")
    assert not [a for a in obj["metadata"].get("annotations", {}) if "kopf" in a]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris"
    ).stdout
    assert "Healthy" in events


class DeploymentRecorder:
    """Records Deployment watch events in a namespace, in order, on a thread."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.events: list[tuple[str, str, int, int]] = []  # (type, name, ready, replicas)
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(cluster, namespace), daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _run(self, cluster: Cluster, namespace: str) -> None:
        try:
            self._record(cluster, namespace)
        except Exception:
            if not self._stopped:
                raise

    def _record(self, cluster: Cluster, namespace: str) -> None:
        for event in self._watch.stream(
            cluster.apps.list_namespaced_deployment, namespace, timeout_seconds=120
        ):
            dep = event["object"]
            self.events.append(
                (
                    event["type"],
                    dep.metadata.name,
                    dep.status.ready_replicas or 0,
                    dep.spec.replicas or 0,
                )
            )

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def test_new_version_is_ready_before_the_old_revision_goes(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    cluster.apply(iris("1.0.0"), namespace)
    wait_ready(cluster, namespace)
    (old,) = revisions(cluster, namespace)
    recorder = DeploymentRecorder(cluster, namespace)
    cluster.apply(iris("1.1.0"), namespace)
    obj = wait_healthy_with(cluster, namespace, "1.1.0")
    recorder.stop()
    (new,) = revisions(cluster, namespace)
    assert new != old
    events = recorder.events
    deleted_at = next(i for i, e in enumerate(events) if e[0] == "DELETED" and e[1] == old)
    ready_at = next(i for i, e in enumerate(events) if e[1] == new and e[2] == e[3] == 3)
    assert ready_at < deleted_at, events
    history = obj["status"]["history"]
    assert [(h["revision"], h["outcome"], h["modelVersion"]) for h in history] == [
        (old, "Replaced", "1.0.0")
    ]
    assert obj["status"]["stable"]["name"] == new


def test_children_deleted_or_edited_by_hand_are_put_back(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    cluster.apply(iris(), namespace)
    wait_ready(cluster, namespace)
    (rev,) = revisions(cluster, namespace)

    cluster.kubectl("delete", "service", "iris-stable", "-n", namespace)
    wait_until(
        lambda: (
            "iris-stable"
            in {s.metadata.name for s in cluster.core.list_namespaced_service(namespace).items}
        ),
        timeout=30,
        what="iris-stable recreated",
    )
    cluster.kubectl("delete", "deployment", rev, "-n", namespace)
    wait_until(
        lambda: (
            (d := revisions(cluster, namespace).get(rev)) is not None
            and d.metadata.deletion_timestamp is None
            and d.status.ready_replicas == 3
        ),
        timeout=30,
        what="revision Deployment recreated and ready",
    )
    cluster.kubectl("scale", "deployment", rev, "--replicas=1", "-n", namespace)
    wait_until(
        lambda: revisions(cluster, namespace)[rev].spec.replicas == 3,
        timeout=30,
        what="replicas put back to 3",
    )
    cluster.kubectl(
        "patch", "service", "iris", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"selector":{"app":"hijacked"}}}',
    )  # fmt: skip
    wait_until(
        lambda: (
            cluster.core.read_namespaced_service("iris", namespace).spec.selector
            == {"canarium.dev/deployment": "iris"}
        ),
        timeout=30,
        what="entry Service selector restored",
    )
    wait_ready(cluster, namespace)


def test_operator_restart_mid_change_converges(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    cluster.apply(iris("1.0.0"), namespace)
    wait_ready(cluster, namespace)
    (old,) = revisions(cluster, namespace)
    before = mdep(cluster, namespace)["status"]

    # Crash the operator, change the spec while it is down, start it again.
    operator.stop()
    cluster.apply(iris("2.0.0", replicas=2), namespace)
    operator.start()
    obj = wait_healthy_with(cluster, namespace, "2.0.0")
    (new,) = revisions(cluster, namespace)
    assert new != old
    assert obj["status"]["ready"] == "2/2"
    assert [h["revision"] for h in obj["status"]["history"]] == [old]

    # Crash again right after a change is picked up; the end state is the same.
    cluster.apply(iris("3.0.0", replicas=2), namespace)
    wait_until(
        lambda: any(
            d.metadata.annotations.get("canarium.dev/model-version") == "3.0.0"
            for d in revisions(cluster, namespace).values()
        ),
        timeout=30,
        what="the 3.0.0 revision created",
    )
    operator.restart()
    obj = wait_healthy_with(cluster, namespace, "3.0.0")
    assert [h["modelVersion"] for h in obj["status"]["history"]] == ["2.0.0", "1.0.0"]

    # A restart with nothing to do changes nothing: same status, same resourceVersion.
    settled = wait_quiet(cluster, namespace)
    operator.restart()
    time.sleep(3)
    again = mdep(cluster, namespace)
    assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    assert before["stable"]["name"] == old


def test_deleting_the_modeldeployment_removes_its_children(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    cluster.apply(iris(), namespace)
    wait_ready(cluster, namespace)
    cluster.kubectl("delete", "mdep", "iris", "-n", namespace)
    wait_until(lambda: not revisions(cluster, namespace), timeout=60, what="Deployments gone")
    wait_until(
        lambda: not cluster.core.list_namespaced_service(namespace).items,
        timeout=60,
        what="Services gone",
    )
    wait_until(
        lambda: not cluster.core.list_namespaced_pod(namespace).items, timeout=60, what="pods gone"
    )


def test_invalid_manifests_are_rejected_with_a_message_naming_the_field(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    cases = sorted((REPO / "tests" / "e2e" / "invalid").glob("*.yaml"))
    assert len(cases) >= 10
    failures = []
    for case in cases:
        text = case.read_text()
        expect = text.splitlines()[0].removeprefix("# expect:").strip()
        assert expect, f"{case.name} has no '# expect:' line"
        result = cluster.kubectl("apply", "-n", namespace, "-f", str(case), check=False)
        if result.returncode == 0:
            failures.append(f"{case.name}: accepted")
        elif expect not in result.stderr or "spec" not in result.stderr:
            failures.append(f"{case.name}: expected {expect!r} in {result.stderr.strip()!r}")
    assert not failures, "\n".join(failures)
    # Nothing invalid was stored.
    assert not cluster.get_json("mdep,rpol", "-n", namespace)["items"]


def test_kubectl_explain_reads_the_descriptions(cluster: Cluster, crds: None) -> None:
    out = cluster.kubectl("explain", "modeldeployment.spec.model.uri").stdout
    assert "configmap://" in out
    out = cluster.kubectl("explain", "rpol.spec.analysis.minSamples").stdout
    assert "inconclusive" in out.lower()
