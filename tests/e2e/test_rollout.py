"""Canary rollouts end to end: the operator as a real process, a real model server process per
simulated pod at the pod's IP, traffic routed as a Service or an HTTPRoute would, and analysis
by the podMetrics provider or a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, PackagedModel, model_deployment
from tests.e2e.operator import OperatorProcess
from tests.e2e.pods import ServingPods
from tests.e2e.prometheus import Prometheus

NAME = "iris"
KUBECTL_CANARIUM = Path(sys.executable).parent / "kubectl-canarium"


def policy(
    *,
    steps: list[dict[str, Any]] | None = None,
    interval: str = "4s",
    failure_limit: int = 1,
    min_samples: int = 40,
    checks: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "steps": steps
        or [
            {"setWeight": 10},
            {"pause": {"duration": "4s"}},
            {"setWeight": 50},
            {"pause": {"duration": "4s"}},
            {"setWeight": 100},
        ],
        "analysis": {
            "interval": interval,
            "failureLimit": failure_limit,
            "minSamples": min_samples,
            "provider": provider or {"podMetrics": {}},
            "checks": checks
            or {
                "errorRate": {"max": 0.05},
                "latencyP99": {"maxMs": 2000},
                "predictionDrift": {"maxPSI": 0.25},
            },
        },
    }


def deploy(
    cluster: Cluster,
    namespace: str,
    model: PackagedModel,
    version: str,
    rollout_policy: dict[str, Any],
    replicas: int = 4,
    **spec: Any,
) -> None:
    manifest = model_deployment(
        NAME, model, version=version, replicas=replicas, rollout={"policy": rollout_policy}, **spec
    )
    cluster.apply(manifest, namespace)


def status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.get_json("mdep", NAME, "-n", namespace).get("status") or {}
    return got


def wait_status(
    cluster: Cluster,
    namespace: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 90,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        st = status(cluster, namespace)
        return st if check(st) else None

    try:
        return wait_until(probe, timeout=timeout, interval=0.5, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status(cluster, namespace)}") from None


def canary_cli(cluster: Cluster, namespace: str, *args: str) -> str:
    proc = subprocess.run(
        [str(KUBECTL_CANARIUM), *args, NAME, "-n", namespace],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def start_v1(
    cluster: Cluster,
    namespace: str,
    models: E2EModels,
    serving_pods: ServingPods,
    rollout_policy: dict[str, Any],
    **spec: Any,
) -> str:
    deploy(cluster, namespace, models.good_v1, "1.0.0", rollout_policy, **spec)
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=60s"
    )
    serving_pods.wait_serving(count=4, timeout=60)
    stable: str = status(cluster, namespace)["stable"]["name"]
    return stable


def revisions_of(serving_pods: ServingPods, results: list[Any]) -> set[str]:
    """The revisions (names) of the running serving processes that answered `results`."""
    running = {p.ip: p.revision for p in serving_pods.processes().values() if p.running()}
    return {running.get(r.ip, f"not a running pod: {r.ip}") for r in results}


def revisions_routed(traffic: LoadGenerator, serving_pods: ServingPods) -> set[str]:
    """The revisions of the endpoints the load generator currently routes to."""
    revision_at = {ip: p.revision for ip, p in serving_pods.by_ip().items()}
    routing = traffic.routing()
    return {revision_at.get(e.ip, e.ip) for eps in routing.endpoints.values() for e in eps}


def events(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}"
    )["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("eventTime") or "")]


def test_good_version_goes_10_50_100_and_is_promoted(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
) -> None:
    old = start_v1(cluster, namespace, models, serving_pods, policy())
    # At 10% (one canary pod of five) drift needs 60 canary predictions per 4 s interval.
    traffic = load(NAME, models.x, rate=120, duration=120)
    traffic.start()
    time.sleep(1)
    deploy(cluster, namespace, models.good_v2, "2.0.0", policy())

    seen_weights: list[int] = []

    def progress(st: dict[str, Any]) -> bool:
        canary = st.get("canary")
        if canary and canary.get("weight") not in seen_weights:
            seen_weights.append(canary["weight"])
        return st.get("phase") == "Healthy" and st["stable"]["modelVersion"] == "2.0.0"

    final = wait_status(cluster, namespace, progress, "2.0.0 promoted", timeout=120)
    assert seen_weights[:1] == [10]
    assert 50 in seen_weights
    assert final["history"][0]["outcome"] == "Promoted"
    assert final["stable"]["name"] != old
    reasons = events(cluster, namespace)
    for reason in ("RolloutStarted", "StepStarted", "Promoted"):
        assert reason in reasons, reasons
    # The old revision is gone and every request now goes to 2.0.0 pods, all answered.
    wait_until(
        lambda: len(serving_pods.select(revision=old)) == 0, timeout=30, what="old pods gone"
    )
    wait_until(
        lambda: revisions_routed(traffic, serving_pods) == {final["stable"]["name"]},
        timeout=10,
        what="the load generator routes to the new revision only",
    )
    mark = traffic.mark()
    time.sleep(2)
    after = traffic.results_since(mark)
    assert after, "traffic kept flowing"
    assert revisions_of(serving_pods, after) == {final["stable"]["name"]}
    failed = [(r.t, r.ip, r.status, r.error) for r in traffic.results if r.status != 200]
    assert not failed, failed[:10]


def test_a_version_that_rejects_live_inputs_is_rolled_back(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
) -> None:
    stable = start_v1(cluster, namespace, models, serving_pods, policy())
    traffic = load(NAME, models.x, rate=60, duration=120)
    traffic.start()
    deploy(cluster, namespace, models.broken, "2.0.0-broken", policy())
    final = wait_status(cluster, namespace, lambda s: s.get("phase") == "Degraded", "rollback")
    degraded = next(c for c in final["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "AnalysisFailed"
    assert "errorRate" in degraded["message"]
    assert "limit <= 0.05" in degraded["message"]
    assert final["stable"]["name"] == stable
    assert final["canary"]["weight"] == 0
    assert final["history"][0]["outcome"] == "RolledBack"
    assert "RolledBack" in events(cluster, namespace)
    # The spec still says what the user wrote (GitOps: Git is the source of truth).
    spec = cluster.get_json("mdep", NAME, "-n", namespace)["spec"]
    assert spec["model"]["version"] == "2.0.0-broken"
    # The canary is scaled to zero and all traffic is back on stable, answered.
    canary_dep = final["canary"]["name"]
    wait_until(
        lambda: cluster.apps.read_namespaced_deployment(canary_dep, namespace).spec.replicas == 0,
        timeout=10,
        what="canary scaled to zero",
    )
    wait_until(
        lambda: not serving_pods.select(revision=canary_dep), timeout=30, what="no canary pod"
    )
    wait_until(
        lambda: revisions_routed(traffic, serving_pods) == {stable},
        timeout=10,
        what="the load generator routes to stable only",
    )
    mark = traffic.mark()
    time.sleep(2)
    after = traffic.results_since(mark)
    assert after
    assert {r.status for r in after} == {200}
    assert revisions_of(serving_pods, after) == {stable}
    # It is not retried by itself.
    time.sleep(5)
    assert status(cluster, namespace)["phase"] == "Degraded"


def test_a_version_that_predicts_differently_is_rolled_back_on_prediction_drift(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
    prometheus: Prometheus,
) -> None:
    """With the prometheus provider: a real Prometheus scraping the real serving processes."""
    prometheus.watch(namespace)
    prom_policy = policy(
        interval="5s",
        min_samples=15,
        provider={"prometheus": {"address": prometheus.url}},
        checks={"errorRate": {"max": 0.05}, "predictionDrift": {"maxPSI": 0.25}},
    )
    prom_policy["steps"] = [{"setWeight": 50}, {"pause": {"duration": "30s"}}, {"setWeight": 100}]
    start_v1(cluster, namespace, models, serving_pods, prom_policy)
    traffic = load(NAME, models.x, rate=60, duration=150)
    traffic.start()
    deploy(cluster, namespace, models.drifted, "2.0.0-drifted", prom_policy)
    final = wait_status(
        cluster, namespace, lambda s: s.get("phase") == "Degraded", "rollback", timeout=120
    )
    degraded = next(c for c in final["conditions"] if c["type"] == "Degraded")
    assert "predictionDrift" in degraded["message"], degraded
    by_check = {m["check"]: m for m in final["analysis"]["measurements"]}
    assert by_check["predictionDrift"]["verdict"] == "Failed"
    assert by_check["predictionDrift"]["value"] > 0.25
    assert by_check["errorRate"]["verdict"] == "Passed", (
        "it answers fine; only its predictions differ"
    )
    assert final["history"][0]["outcome"] == "RolledBack"
    prometheus.unwatch(namespace)


def test_no_traffic_holds_the_rollout_as_inconclusive(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
) -> None:
    start_v1(cluster, namespace, models, serving_pods, policy())
    deploy(cluster, namespace, models.good_v2, "2.0.0", policy())
    held = wait_status(
        cluster,
        namespace,
        lambda s: (s.get("analysis") or {}).get("intervals", 0) >= 3,
        "three analysis intervals",
        timeout=60,
    )
    assert held["phase"] == "Progressing"
    assert held["currentStep"] == 1, "held at the pause after setWeight 10"
    assert held["analysis"]["failures"] == 0
    assert held["analysis"]["lastVerdict"] == "Inconclusive"
    samples = next(m for m in held["analysis"]["measurements"] if m["check"] == "samples")
    assert samples["verdict"] == "Inconclusive"
    assert "minSamples" in samples["reason"]
    assert "holding" in held["message"]
    assert held["canary"]["replicas"] == 1, "neither rolled back nor promoted"


def test_pause_waits_for_promote_abort_rolls_back_retry_starts_again(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
) -> None:
    manual = policy(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}])
    start_v1(cluster, namespace, models, serving_pods, manual)
    traffic = load(NAME, models.x, rate=40, duration=120)
    traffic.start()
    deploy(cluster, namespace, models.good_v2, "2.0.0", manual)
    paused = wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused")
    assert "promote" in paused["pauseReason"]
    time.sleep(4)
    assert status(cluster, namespace)["phase"] == "Paused", "a pause without duration waits"
    view = canary_cli(cluster, namespace, "status")
    assert "Paused" in view
    assert "⏸ 2. pause (until promoted)" in view

    canary_cli(cluster, namespace, "abort")
    aborted = wait_status(cluster, namespace, lambda s: s.get("phase") == "Degraded", "aborted")
    assert aborted["history"][0]["outcome"] == "Aborted"
    assert aborted["canary"]["weight"] == 0

    canary_cli(cluster, namespace, "retry")
    again = wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused again")
    # kwok marks a pod Ready at once; a kubelet would wait for the readiness probe. Promote only
    # once the canary's real server is ready, as the operator would see it on a real node.
    canary = again["canary"]["name"]
    serving_pods.wait_serving(revision=canary, count=1, timeout=30)
    wait_until(
        lambda: canary in revisions_routed(traffic, serving_pods),
        timeout=10,
        what="traffic reaching the canary",
    )
    canary_cli(cluster, namespace, "promote")
    final = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Healthy" and s["stable"]["modelVersion"] == "2.0.0",
        "promoted",
    )
    assert [h["outcome"] for h in final["history"][:2]] == ["Promoted", "Aborted"]
    assert "Promoted" in canary_cli(cluster, namespace, "status")
    failed = [(r.t, r.ip, r.status, r.error) for r in traffic.results if r.status != 200]
    assert not failed, failed[:10]


def test_gateway_api_router_writes_exact_weights(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
    gateway_api_crds: None,
) -> None:
    traffic_spec = {
        "router": "gatewayAPI",
        "gatewayAPI": {
            "parentRefs": [{"name": "public"}],
            "headerMatch": {"name": "X-Canary", "value": "always"},
        },
    }
    manual = policy(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    start_v1(cluster, namespace, models, serving_pods, manual, traffic=traffic_spec)
    deploy(cluster, namespace, models.good_v2, "2.0.0", manual, traffic=traffic_spec)
    wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused at 20%")
    route = cluster.get_json("httproute", NAME, "-n", namespace)
    rules = route["spec"]["rules"]
    assert rules[0]["matches"][0]["headers"][0]["name"] == "X-Canary"
    weights = {b["name"]: b["weight"] for b in rules[-1]["backendRefs"]}
    assert weights == {"iris-stable": 80, "iris-canary": 20}
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    # Stable keeps its full size with a traffic router; the route does the split.
    st = status(cluster, namespace)
    assert st["stable"]["replicas"] == 4
    assert st["canary"]["effectiveWeight"] == 20.0
    serving_pods.wait_serving(count=5, timeout=60)
    traffic = load(NAME, models.x, router="gatewayAPI", rate=100, max_requests=400, duration=30)
    traffic.run()
    share = traffic.by_service()["iris-canary"] / max(1, sum(traffic.by_service().values()))
    assert 0.12 < share < 0.28, traffic.by_service()
    canary_cli(cluster, namespace, "promote", "--full")
    wait_status(cluster, namespace, lambda s: s.get("phase") == "Healthy", "promoted")
    route = cluster.get_json("httproute", NAME, "-n", namespace)
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}
