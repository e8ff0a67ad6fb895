"""The parts of a rollout's life beyond its steps, on the real node: the bake after promotion
(passed and failed), `initialDelay` before the first judgement, a retry after an analysis
rollback that starts clean, and a RolloutPolicy that changes or disappears mid-rollout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, in_configmap, model_deployment
from tests.e2e.test_rollout import (
    NAME,
    canary_cli,
    deploy,
    endpoint_revisions,
    events,
    failed,
    pods_of,
    policy,
    start_v1,
    status,
    wait_status,
)

pytestmark = pytest.mark.usefixtures("restricted")


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions") or [] if c["type"] == kind)


def deployment_replicas(cluster: Cluster, namespace: str, name: str) -> int | None:
    items = cluster.get_json("deployments", "-n", namespace)["items"]
    found = [d for d in items if d["metadata"]["name"] == name]
    return int(found[0]["spec"]["replicas"]) if found else None


def test_a_bake_keeps_the_previous_revision_scaled_down_until_it_passes(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    baking = policy(steps=[{"setWeight": 50}, {"pause": {"duration": "4s"}}, {"setWeight": 100}])
    baking["bake"] = "20s"
    old = start_v1(cluster, namespace, models, baking)
    traffic = load(NAME, models.x, rate=60, duration=150)
    traffic.start()
    deploy(cluster, namespace, models.good_v2, "2.0.0", baking)
    bake = wait_status(
        cluster,
        namespace,
        lambda s: (s.get("previous") or {}).get("name") == old,
        "promoted and baking",
        timeout=120,
    )
    assert bake["phase"] == "Progressing", bake
    assert condition(bake, "Progressing")["reason"] == "Baking"
    assert bake["stable"]["modelVersion"] == "2.0.0"
    assert bake["history"][0]["outcome"] == "Promoted"
    assert "baking" in bake["message"]
    # The previous revision is the fallback: its Deployment stays, scaled to zero.
    wait_until(
        lambda: deployment_replicas(cluster, namespace, old) == 0,
        timeout=30,
        what="the previous revision scaled to zero and kept",
    )
    done = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Healthy",
        "bake passed",
        timeout=90,
    )
    assert not done.get("previous"), done
    assert condition(done, "Ready")["status"] == "True"
    assert "BakeCompleted" in events(cluster, namespace)
    wait_until(
        lambda: deployment_replicas(cluster, namespace, old) is None,
        timeout=30,
        what="the previous revision removed after its bake",
    )
    traffic.stop()
    assert not failed(traffic), failed(traffic)[:10]


def test_a_version_that_fails_its_bake_goes_back_to_the_previous_revision(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """The live inputs change after promotion: the 3-feature model answers the 3-feature
    traffic of its canary steps and passes them, then rejects the 4-feature traffic that
    follows. Its bake catches it: the previous revision scales up again and takes all
    traffic."""
    baking = policy(steps=[{"setWeight": 100}, {"pause": {"duration": "8s"}}])
    baking["bake"] = "90s"
    old = start_v1(cluster, namespace, models, baking)
    three_features = load(NAME, models.x[:, :3], rate=60, duration=180)
    three_features.start()
    deploy(cluster, namespace, models.broken, "2.0.0-broken", baking)
    promoted = wait_status(
        cluster,
        namespace,
        lambda s: (s.get("previous") or {}).get("name") == old,
        "promoted and baking",
        timeout=120,
    )
    assert promoted["history"][0]["outcome"] == "Promoted"
    three_features.stop()
    traffic = load(NAME, models.x, rate=60, duration=180)
    traffic.start()
    final = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Degraded",
        "rolled back during its bake",
        timeout=90,
    )
    degraded = condition(final, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "AnalysisFailed"
    assert "errorRate" in degraded["message"]
    assert final["stable"]["name"] == old
    assert final["stable"]["modelVersion"] == "1.0.0"
    assert final["history"][0]["outcome"] == "RolledBack"
    assert final["history"][1]["outcome"] == "Promoted"
    assert "RolledBack" in events(cluster, namespace)
    wait_until(
        lambda: endpoint_revisions(cluster, namespace) == {old},
        timeout=60,
        what="the Service's endpoints are the previous revision's only",
    )
    time.sleep(2)  # kube-proxy's rules follow the EndpointSlices within its 1 s minSyncPeriod
    mark = traffic.mark()
    time.sleep(3)
    after = traffic.results_since(mark)
    assert after
    assert {r.status for r in after} == {200}, traffic.statuses(after)
    assert {r.version for r in after} == {"1.0.0"}


def test_initial_delay_holds_the_first_judgement(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """A broken canary is rolled back within a few 4 s intervals without initialDelay
    (test_a_version_that_rejects_live_inputs_is_rolled_back); with initialDelay 25s no
    interval is judged before 25 s have passed since the canary took traffic."""
    delayed = policy()
    delayed["analysis"]["initialDelay"] = "25s"
    start_v1(cluster, namespace, models, delayed)
    traffic = load(NAME, models.x, rate=60, duration=150)
    traffic.start()
    deploy(cluster, namespace, models.broken, "2.0.0-broken", delayed)
    wait_status(
        cluster,
        namespace,
        lambda s: (
            (s.get("canary") or {}).get("readyReplicas", 0) > 0
            and (s.get("canary") or {}).get("weight", 0) > 0
        ),
        "the canary takes traffic",
    )
    took_traffic = time.monotonic()
    while time.monotonic() - took_traffic < 18:
        now = status(cluster, namespace)
        assert now["phase"] == "Progressing", now
        assert (now.get("analysis") or {}).get("intervals", 0) == 0, now
        time.sleep(1)
    final = wait_status(
        cluster, namespace, lambda s: s.get("phase") == "Degraded", "rolled back", timeout=60
    )
    assert time.monotonic() - took_traffic >= 20
    assert condition(final, "Degraded")["reason"] == "AnalysisFailed"
    assert final["analysis"]["intervals"] >= 1


def test_retry_after_an_analysis_rollback_starts_clean(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """After an AnalysisFailed rollback, `retry` starts the rollout from its first step with
    no failures counted: with no traffic it holds as inconclusive instead of rolling back at
    once on the failures of the last attempt."""
    stable = start_v1(cluster, namespace, models, policy())
    traffic = load(NAME, models.x, rate=60, duration=120)
    traffic.start()
    deploy(cluster, namespace, models.broken, "2.0.0-broken", policy())
    rolled_back = wait_status(
        cluster, namespace, lambda s: s.get("phase") == "Degraded", "rollback"
    )
    assert rolled_back["analysis"]["failures"] >= 1
    canary = rolled_back["canary"]["name"]
    traffic.stop()

    canary_cli(cluster, namespace, "retry")
    again = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Progressing" and (s.get("canary") or {}).get("weight"),
        "retried",
    )
    assert again["canary"]["name"] == canary
    assert again["currentStep"] <= 1
    held = wait_status(
        cluster,
        namespace,
        lambda s: (s.get("analysis") or {}).get("intervals", 0) >= 3,
        "three intervals of the retry",
        timeout=60,
    )
    assert held["phase"] == "Progressing", held
    assert held["analysis"]["failures"] == 0
    assert held["analysis"]["lastVerdict"] == "Inconclusive"
    assert held["stable"]["name"] == stable
    assert "RolloutRetried" in events(cluster, namespace)


def rollout_policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_policy_changed_or_deleted_mid_rollout(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """At 25% behind a pause for a person, the ModelDeployment is pointed at another
    RolloutPolicy: the rollout starts that policy's steps from the first (as Argo Rollouts
    does when a canary's steps change), with the same canary. While the referenced policy
    does not exist the rollout holds where it is: a missing policy never promotes an unjudged
    canary."""
    manual = policy(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}])
    del manual["analysis"]
    fast = policy(
        steps=[
            {"setWeight": 50},
            {"pause": {"duration": "10s"}},
            {"setWeight": 75},
            {"pause": {"duration": "4s"}},
            {"setWeight": 100},
        ]
    )
    del fast["analysis"]
    cluster.apply([rollout_policy("manual", manual), rollout_policy("fast", fast)], namespace)
    v1 = in_configmap(cluster, namespace, models.good_v1)
    v2 = in_configmap(cluster, namespace, models.good_v2)

    def apply(model: Any, version: str, ref: str) -> None:
        cluster.apply(
            model_deployment(
                NAME, model, version=version, replicas=4, rollout={"policyRef": {"name": ref}}
            ),
            namespace,
        )

    apply(v1, "1.0.0", "manual")
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    stable = status(cluster, namespace)["stable"]["name"]
    traffic = load(NAME, models.x, rate=30, duration=200)
    traffic.start()
    apply(v2, "2.0.0", "manual")
    paused = wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused")
    canary = paused["canary"]["name"]
    assert paused["canary"]["weight"] == 25

    # The referenced policy disappears: nothing moves.
    cluster.kubectl("delete", "rolloutpolicy", "manual", "-n", namespace)
    apply(v2, "2.0.0", "missing")
    held = wait_status(
        cluster,
        namespace,
        lambda s: condition(s, "Progressing").get("reason") == "PolicyNotFound",
        "PolicyNotFound",
    )
    for _ in range(10):
        now = status(cluster, namespace)
        assert now["stable"]["name"] == stable, now
        assert (now.get("canary") or {}).get("name") == canary, now
        assert now["canary"]["weight"] == 25, now
        assert "missing" in now["message"], now
        time.sleep(1)
    assert deployment_replicas(cluster, namespace, stable) == 3, held
    assert deployment_replicas(cluster, namespace, canary) == 1, held

    # Another policy: its steps from the first, the same canary, on to promotion.
    apply(v2, "2.0.0", "fast")
    seen: list[int] = []

    def progress(st: dict[str, Any]) -> bool:
        weight = (st.get("canary") or {}).get("weight")
        if weight is not None and weight not in seen:
            seen.append(weight)
        return st.get("phase") == "Healthy" and st["stable"]["modelVersion"] == "2.0.0"

    final = wait_status(cluster, namespace, progress, "promoted under the new policy", timeout=90)
    assert 50 in seen, seen
    assert 75 in seen, seen
    assert final["stable"]["name"] == canary, "the same canary, not a new revision"
    assert final["history"][0]["outcome"] == "Promoted"
    wait_until(lambda: not pods_of(cluster, namespace, stable), timeout=60, what="v1 pods gone")
    traffic.stop()
    assert not failed(traffic), failed(traffic)[:10]
