"""What GitOps tools make of live ModelDeployments and RolloutPolicies (issue: Flux / kstatus).

Flux waits on kstatus (sigs.k8s.io/cli-utils pkg/kstatus): here the real library (hack/kstatus/,
fixture `kstatus`) computes the status of each live object as the operator drives it through a
rollout: Healthy is Current; a rollout, a pause for a person, a status older than the spec (or
none yet, on a new object) are InProgress (a pause with its reason); a rollback or a model that
cannot load is Failed at once, so `flux` fails instead of waiting for its timeout. Argo CD's
health of the same objects comes from the shipped health check (tests/argocd_lua.py, Argo CD's
own Lua runtime) where it exists.

The rollout runs on kwok's simulated nodes (no real pod needed for states); the model that
cannot load runs on the real node."""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.kstatus import KStatus
from tests.e2e.models import E2EModels, in_configmap, model_deployment
from tests.e2e.test_operator import iris
from tests.e2e.test_rollout import canary_cli

POLICY = "canary"
# A timed pause long enough to catch the rollout mid-way, then a pause for a person.
STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "1h"}},
    {"setWeight": 50},
    {"pause": {}},
    {"setWeight": 100},
]


def argocd_health(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Argo CD's health of `obj` from the shipped health check; None while there is none."""
    try:
        from tests import argocd_lua
    except ImportError:
        return None
    script = argocd_lua.REPO / "manifests" / "argocd" / "canarium.dev" / obj["kind"] / "health.lua"
    if not script.exists():
        return None
    result: dict[str, Any] = argocd_lua.run("health", script, obj)
    return result


def assert_gitops(
    kstatus: KStatus,
    obj: dict[str, Any],
    status: str,
    argocd: str | None,
    message: str = "",
) -> dict[str, Any]:
    """kstatus of the live object is `status` (its message containing `message`), and Argo
    CD's health is `argocd` (None: not asserted). Returns kstatus' result."""
    got = kstatus.compute(obj)
    where = (
        f"kstatus of {obj['kind']} {obj['metadata']['name']}: {got}\nobject status: "
        + (json.dumps(obj.get("status"), indent=1)[:4000])
    )
    assert got["status"] == status, where
    assert message in got["message"], where
    if argocd is not None:
        health = argocd_health(obj)
        if health is None:
            warnings.warn(
                f"no Argo CD health check for {obj['kind']} yet: its health is not asserted",
                stacklevel=2,
            )
        else:
            assert health["status"] == argocd, f"Argo CD health {health}\n{where}"
    return got


def live(cluster: Cluster, namespace: str, kind: str = "mdep", name: str = "iris") -> Any:
    return cluster.get_json(kind, name, "-n", namespace)


def wait_live(
    cluster: Cluster, namespace: str, check: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    """The live ModelDeployment once its status is of the current generation and passes
    `check(status)`."""

    def probe() -> dict[str, Any] | None:
        obj: dict[str, Any] = live(cluster, namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and check(status) else None

    try:
        return wait_until(probe, timeout=timeout, interval=0.5, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlive: {live(cluster, namespace).get('status')}") from None


def apply_json(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """`kubectl apply`, returning the object as the API server stored it by this write: what a
    GitOps tool reads right after applying, before the operator has seen it."""
    out = cluster.kubectl(
        "apply", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(manifest)
    ).stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def with_policy(version: str) -> dict[str, Any]:
    obj = iris(version, replicas=4)
    obj["spec"]["rollout"] = {"policyRef": {"name": POLICY}}
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_kstatus_and_argocd_health_follow_a_rollout(
    cluster: Cluster, namespace: str, operator: InstalledOperator, kstatus: KStatus
) -> None:
    # The RolloutPolicy: the operator checks it and says so (READY column, kstatus Current).
    policy = {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": POLICY},
        "spec": {"steps": STEPS},
    }
    created = apply_json(cluster, namespace, policy)
    # Not yet checked by the operator (the CRD reads status as observedGeneration 0).
    assert_gitops(kstatus, created, "InProgress", None, "latest observed generation is 0")
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"rpol/{POLICY}", "-n", namespace, "--timeout=30s"
    )
    rpol = live(cluster, namespace, "rpol", POLICY)
    assert rpol["status"]["observedGeneration"] == rpol["metadata"]["generation"]
    assert condition(rpol, "Stalled")["status"] == "False"
    assert_gitops(kstatus, rpol, "Current", None)
    table = cluster.kubectl("get", "rpol", POLICY, "-n", namespace).stdout.split()
    assert table[:4] == ["NAME", "READY", "AGE", POLICY], table
    assert table[4] == "True", table

    # Created, not yet seen by the operator: InProgress, not Current for want of a status.
    created = apply_json(cluster, namespace, with_policy("1.0.0"))
    assert_gitops(kstatus, created, "InProgress", "Progressing", "latest observed generation is 0")
    # Healthy: Current; Reconciling and Stalled are False.
    cluster.kubectl("wait", "--for=condition=Ready", "mdep/iris", "-n", namespace, "--timeout=60s")
    healthy = wait_live(cluster, namespace, lambda s: s.get("phase") == "Healthy", "Healthy")
    assert condition(healthy, "Reconciling")["status"] == "False"
    assert condition(healthy, "Stalled")["status"] == "False"
    assert_gitops(kstatus, healthy, "Current", "Healthy")

    # A new version, as the API server answers the apply: the status is of the generation
    # before, so it is InProgress whatever the conditions say.
    applied = apply_json(cluster, namespace, with_policy("2.0.0"))
    generation = applied["metadata"]["generation"]
    assert applied["status"]["observedGeneration"] == generation - 1, applied["status"]
    assert applied["status"]["phase"] == "Healthy"
    assert_gitops(
        kstatus,
        applied,
        "InProgress",
        "Progressing",
        f"generation is {generation}, but latest observed generation is {generation - 1}",
    )

    # Mid-rollout: the canary at 25% for an hour.
    rolling = wait_live(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Progressing" and (s.get("canary") or {}).get("weight") == 25,
        "the canary at 25%",
    )
    assert condition(rolling, "Reconciling")["reason"] == "RolloutInProgress"
    assert_gitops(kstatus, rolling, "InProgress", "Progressing", "canary")

    # Paused by a person: still InProgress (a person may go on), with the reason.
    canary_cli(cluster, namespace, "pause")
    paused = wait_live(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused")
    got = assert_gitops(kstatus, paused, "InProgress", "Suspended", "paused by a person")
    assert got["conditions"][0]["reason"] == "Paused", got

    # Resumed and promoted past the timed pause: the `pause: {}` step waits for a person.
    canary_cli(cluster, namespace, "resume")
    wait_live(cluster, namespace, lambda s: s.get("phase") == "Progressing", "resumed")
    canary_cli(cluster, namespace, "promote")
    waiting = wait_live(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Paused" and (s.get("canary") or {}).get("weight") == 50,
        "waiting for a person at 50%",
    )
    reason = waiting["status"]["pauseReason"]
    assert reason
    assert_gitops(kstatus, waiting, "InProgress", "Suspended", reason)

    # Aborted: rolled back, and Failed at once (Stalled), with why.
    canary_cli(cluster, namespace, "abort")
    aborted = wait_live(cluster, namespace, lambda s: s.get("phase") == "Degraded", "aborted")
    stalled = condition(aborted, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Aborted")
    assert condition(aborted, "Reconciling")["status"] == "False"
    assert_gitops(kstatus, aborted, "Failed", "Degraded", "was aborted")
    # `kubectl wait --for=condition=Ready` keeps its meaning: the asked version is not served.
    assert condition(aborted, "Ready")["status"] == "False"

    # Git reverted to 1.0.0: Current again.
    cluster.apply(with_policy("1.0.0"), namespace)
    back = wait_live(cluster, namespace, lambda s: s.get("phase") == "Healthy", "reverted")
    assert_gitops(kstatus, back, "Current", "Healthy")


@pytest.mark.usefixtures("restricted")
def test_a_model_that_cannot_load_is_failed(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    kstatus: KStatus,
) -> None:
    """On the real node: a first revision whose model fails its sha256 crash-loops; kstatus
    reads Failed (not InProgress until a timeout), with the server's own reason."""
    tampered = dataclasses.replace(models.good_v1, sha256=models.good_v2.sha256)
    model = in_configmap(cluster, namespace, tampered)
    cluster.apply(model_deployment("iris", model, replicas=1), namespace)
    failed = wait_live(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Degraded",
        "Degraded",
        timeout=120,
    )
    stalled = condition(failed, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ModelLoadFailed"), stalled
    assert_gitops(kstatus, failed, "Failed", "Degraded", "sha256")
