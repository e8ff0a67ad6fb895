"""Canary rollouts end to end on the real node: the operator installed from its image, serving
pods running the serving image with the models in ConfigMaps, readiness from the kubelet's
probes, traffic through the entry Service's ClusterIP (kube-proxy), and analysis by the
podMetrics provider or a real Prometheus scraping the pods."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, PackagedModel, in_configmap, model_deployment
from tests.e2e.prometheus import Prometheus

pytestmark = pytest.mark.usefixtures("restricted")

if TYPE_CHECKING:
    from tests.e2e.gateway import Gateway

NAME = "iris"
KUBECTL_CANARIUM = Path(sys.executable).parent / "kubectl-canarium"
CANARIUM = Path(sys.executable).parent / "canarium"


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
    model = in_configmap(cluster, namespace, model)
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


def revision_of(pod: dict[str, Any]) -> str:
    """The revision (Deployment) of a pod: its ReplicaSet's name without the template hash."""
    owner = (pod["metadata"].get("ownerReferences") or [{}])[0].get("name", "")
    return str(owner).rsplit("-", 1)[0]


def pods_of(cluster: Cluster, namespace: str, revision: str, ready: bool = False) -> list[str]:
    """Names of the live pods of a revision (its Deployment `revision`), Ready ones only if
    asked."""
    items = cluster.get_json("pods", "-n", namespace, "-l", f"canarium.dev/deployment={NAME}")
    out = []
    for pod in items["items"]:
        if revision_of(pod) != revision or pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        if ready and conditions.get("Ready") != "True":
            continue
        out.append(pod["metadata"]["name"])
    return out


def endpoint_revisions(cluster: Cluster, namespace: str, service: str = NAME) -> set[str]:
    """The revisions (Deployment names) of the ready endpoints of a Service's EndpointSlices:
    where kube-proxy sends its traffic."""
    slices = cluster.get_json(
        "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    pods = {
        ep["targetRef"]["name"]
        for es in slices
        for ep in es.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready", True) and ep.get("targetRef")
    }
    by_name = {p["metadata"]["name"]: p for p in cluster.get_json("pods", "-n", namespace)["items"]}
    return {revision_of(by_name[p]) if p in by_name else p for p in pods}


def start_v1(
    cluster: Cluster, namespace: str, models: E2EModels, rollout_policy: dict[str, Any], **spec: Any
) -> str:
    deploy(cluster, namespace, models.good_v1, "1.0.0", rollout_policy, **spec)
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    stable: str = status(cluster, namespace)["stable"]["name"]
    wait_until(
        lambda: len(pods_of(cluster, namespace, stable, ready=True)) == 4,
        timeout=60,
        what="4 ready pods of 1.0.0",
    )
    return stable


def analysis_runs(operator: InstalledOperator, namespace: str) -> Counter[str]:
    """The intervals the operator judged for the ModelDeployment, by verdict (its metrics)."""
    text = urllib.request.urlopen(operator.metrics_url(), timeout=5).read().decode()
    runs: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("canarium_analysis_runs_total{") and (
            f'namespace="{namespace}"' in line and f'modeldeployment="{NAME}"' in line
        ):
            verdict = line.split('verdict="', 1)[1].split('"', 1)[0]
            runs[verdict] += int(float(line.rsplit(" ", 1)[1]))
    return runs


def replay_recording(
    cluster: Cluster, namespace: str, rollout_policy: dict[str, Any], tmp_path: Path
) -> dict[str, Any]:
    """Export the rollout's analysis recording with the CLI and replay the policy over it."""
    recording = tmp_path / "recording.json"
    recording.write_text(canary_cli(cluster, namespace, "recording"))
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(
        json.dumps({"apiVersion": "canarium.dev/v1alpha1", "kind": "RolloutPolicy",
                    "metadata": {"name": "p"}, "spec": rollout_policy})
    )  # fmt: skip
    proc = subprocess.run(
        [str(CANARIUM), "policy", "replay", str(policy_file), str(recording), "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    replayed: dict[str, Any] = json.loads(proc.stdout)
    return replayed


def assert_replay_decides_as_the_operator(
    replayed: dict[str, Any], final: dict[str, Any], runs: Counter[str], outcome: str
) -> None:
    """The replay of a real rollout's recording took the operator's decisions: the same
    outcome, the same number of judged intervals with the same verdicts, and (when status
    still shows them) the same last measurements."""
    assert replayed["outcome"] == outcome, replayed["reason"]
    verdicts = Counter(i["verdict"] for i in replayed["intervals"])
    assert verdicts == runs, (verdicts, runs)
    analysis = final.get("analysis")
    if analysis and analysis.get("measurements"):
        assert replayed["interval"] == analysis["intervals"]
        last = replayed["intervals"][-1]["checks"]
        ours = [(m["check"], m["verdict"], m.get("value")) for m in analysis["measurements"]]
        assert [(m["check"], m["verdict"], m.get("value")) for m in last] == ours


def failed(traffic: LoadGenerator) -> list[tuple[float, str, int, str]]:
    return [(r.t, r.ip, r.status, r.error) for r in traffic.results if r.status != 200]


def events(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}"
    )["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("eventTime") or "")]


def test_good_version_goes_10_50_100_and_is_promoted(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    tmp_path: Path,
) -> None:
    old = start_v1(cluster, namespace, models, policy())
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
    wait_until(lambda: not pods_of(cluster, namespace, old), timeout=60, what="old pods gone")
    wait_until(
        lambda: endpoint_revisions(cluster, namespace) == {final["stable"]["name"]},
        timeout=30,
        what="the Service's endpoints are the new revision's only",
    )
    time.sleep(2)  # kube-proxy's rules follow the EndpointSlices within its 1 s minSyncPeriod
    mark = traffic.mark()
    time.sleep(2)
    after = traffic.results_since(mark)
    assert after, "traffic kept flowing"
    assert {r.version for r in after} == {"2.0.0"}
    # Not one request failed while traffic shifted and old pods drained (preStop).
    assert not failed(traffic), failed(traffic)[:10]
    assert {r.version for r in traffic.results} == {"1.0.0", "2.0.0"}
    # Its recording, replayed offline, takes the decisions the operator took.
    replayed = replay_recording(cluster, namespace, policy(), tmp_path)
    runs = analysis_runs(operator, namespace)
    assert sum(runs.values()) >= 2, runs
    assert_replay_decides_as_the_operator(replayed, final, runs, "Promoted")


def test_a_version_that_rejects_live_inputs_is_rolled_back(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    tmp_path: Path,
) -> None:
    stable = start_v1(cluster, namespace, models, policy())
    traffic = load(NAME, models.x, rate=60, duration=120)
    traffic.start()
    deploy(cluster, namespace, models.broken, "2.0.0-broken", policy())
    final = wait_status(cluster, namespace, lambda s: s.get("phase") == "Degraded", "rollback")
    degraded = next(c for c in final["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "AnalysisFailed"
    assert "errorRate" in degraded["message"]
    assert "showed errorRate worse than tolerated" in degraded["message"]
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
        lambda: not pods_of(cluster, namespace, canary_dep), timeout=60, what="no canary pod"
    )
    wait_until(
        lambda: endpoint_revisions(cluster, namespace) == {stable},
        timeout=30,
        what="the Service's endpoints are stable's only",
    )
    time.sleep(2)  # kube-proxy's rules follow the EndpointSlices within its 1 s minSyncPeriod
    mark = traffic.mark()
    time.sleep(3)
    after = traffic.results_since(mark)
    assert after
    assert {r.status for r in after} == {200}, traffic.statuses(after)
    assert {r.version for r in after} == {"1.0.0"}
    # It is not retried by itself.
    time.sleep(5)
    assert status(cluster, namespace)["phase"] == "Degraded"
    # Its recording, replayed offline, rolls back at the same interval on the same numbers.
    replayed = replay_recording(cluster, namespace, policy(), tmp_path)
    assert_replay_decides_as_the_operator(
        replayed, final, analysis_runs(operator, namespace), "RolledBack"
    )


def test_a_version_that_predicts_differently_is_rolled_back_on_prediction_drift(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
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
    start_v1(cluster, namespace, models, prom_policy)
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
    operator: InstalledOperator,
    models: E2EModels,
) -> None:
    start_v1(cluster, namespace, models, policy())
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
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    manual = policy(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}])
    start_v1(cluster, namespace, models, manual)
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
    # Paused means the canary's pod passed its readiness probe and takes its share.
    canary = again["canary"]["name"]
    assert canary in endpoint_revisions(cluster, namespace)
    wait_until(
        lambda: "2.0.0" in {r.version for r in traffic.results},
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
    assert not failed(traffic), failed(traffic)[:10]


def test_gateway_api_router_writes_exact_weights(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    gateway: Gateway,
) -> None:
    """The HTTPRoute's weights are exact, and a real Gateway (Traefik, the `gateway` fixture)
    routes by them: through its listener the canary answers (model_version 2.0.0) its weight's
    share of requests, and every request with the header match. Switched to the replicas
    router, the HTTPRoute is deleted."""
    gateway.attach(namespace, "public")
    traffic_spec = {
        "router": "gatewayAPI",
        "gatewayAPI": {
            "parentRefs": [{"name": "public"}],
            "headerMatch": {"name": "X-Canary", "value": "always"},
        },
    }
    manual = policy(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    start_v1(cluster, namespace, models, manual, traffic=traffic_spec)
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
    canary = st["canary"]["name"]
    wait_until(
        lambda: len(pods_of(cluster, namespace, canary, ready=True)) == 1,
        timeout=60,
        what="the canary's pod ready",
    )

    def accepted() -> bool:
        parents = cluster.get_json("httproute", NAME, "-n", namespace).get("status", {})
        return any(
            p["controllerName"] == gateway.CONTROLLER
            and {c["type"]: c["status"] for c in p["conditions"]}.get("Accepted") == "True"
            for p in parents.get("parents") or []
        )

    wait_until(accepted, timeout=30, what="the Gateway accepting the HTTPRoute")

    def through_gateway(n: int, headers: dict[str, str] | None = None) -> LoadGenerator:
        return load(
            NAME, models.x, router="gateway", url=gateway.url, headers=headers,
            rate=100, max_requests=n, duration=30,
        ).run()  # fmt: skip

    def answered(n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        traffic = through_gateway(n, headers)
        return traffic.by(lambda r: r.version if r.status == 200 else f"status {r.status}")

    # The Gateway has programmed both backends (the canary's endpoint is a moment behind).
    wait_until(
        lambda: set(answered(10, {"X-Canary": "always"})) == {"2.0.0"},
        timeout=30,
        what="the canary answering through the Gateway",
    )
    traffic = through_gateway(400)
    versions = traffic.by(lambda r: r.version)
    assert traffic.statuses() == {200: 400}, failed(traffic)[:10]
    assert set(versions) == {"1.0.0", "2.0.0"}, versions
    # Traefik's weighted round robin is exact (80 of 400 here), not a random draw.
    assert abs(versions["2.0.0"] / traffic.sent - 0.20) <= 0.02, versions
    assert answered(100, {"X-Canary": "always"}) == {"2.0.0": 100}
    canary_cli(cluster, namespace, "promote", "--full")
    wait_status(cluster, namespace, lambda s: s.get("phase") == "Healthy", "promoted")
    route = cluster.get_json("httproute", NAME, "-n", namespace)
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}
    wait_until(
        lambda: answered(40) == {"2.0.0": 40},
        timeout=60,
        what="every answer through the Gateway from 2.0.0 once promoted",
    )

    # Back to the replicas router: the HTTPRoute goes (no route left with frozen weights), the
    # same revision keeps serving through the ClusterIP Service.
    promoted = status(cluster, namespace)["stable"]["name"]
    deploy(cluster, namespace, models.good_v2, "2.0.0", manual, traffic={"router": "replicas"})
    wait_until(
        lambda: (
            not cluster.kubectl(
                "get", "httproute", NAME, "-n", namespace, "--ignore-not-found", "-o", "name"
            ).stdout.strip()
        ),
        timeout=30,
        what="the HTTPRoute deleted after the switch to the replicas router",
    )
    final = wait_status(cluster, namespace, lambda s: s.get("phase") == "Healthy", "Healthy")
    assert final["stable"]["name"] == promoted, "a router switch is not a new revision"
    assert final["stable"]["effectiveWeight"] == 100.0
    after = load(NAME, models.x, rate=50, max_requests=40, duration=30).run()
    assert after.by(lambda r: r.version) == {"2.0.0": 40}, failed(after)[:10]


def test_a_model_that_fails_its_sha256_crash_loops_and_is_rolled_back_at_once(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """The canary's server refuses a model whose sha256 is not the one in the spec: it writes
    why to its termination log and exits, the kubelet restarts it into CrashLoopBackOff, and the
    operator rolls back from the container's termination message, long before the progress
    deadline (600 s), while stable keeps answering every request."""
    stable = start_v1(cluster, namespace, models, policy())
    traffic = load(NAME, models.x, rate=40, duration=180)
    traffic.start()
    tampered = dataclasses.replace(models.good_v2, sha256=models.good_v1.sha256)
    started = time.monotonic()
    deploy(cluster, namespace, tampered, "2.0.0", policy())
    final = wait_status(
        cluster, namespace, lambda s: s.get("phase") == "Degraded", "rolled back", timeout=120
    )
    took = time.monotonic() - started
    degraded = next(c for c in final["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ModelLoadFailed", degraded
    assert "sha256" in degraded["message"], degraded
    assert final["stable"]["name"] == stable
    assert final["history"][0]["outcome"] == "RolledBack"
    assert took < 120, f"{took:.0f}s"
    # The kubelet really restarted it: the termination message is the container's own.
    canary = final["canary"]["name"]
    pods = cluster.get_json("pods", "-n", namespace)["items"]
    statuses = [
        c
        for p in pods
        if revision_of(p) == canary
        for c in p["status"].get("containerStatuses") or []
    ]
    if statuses:  # the canary may already be scaled away
        terminated = statuses[0].get("lastState", {}).get("terminated") or {}
        assert "sha256" in terminated.get("message", ""), statuses[0]
    time.sleep(2)
    traffic.stop()
    assert not failed(traffic), failed(traffic)[:10]
    assert {r.version for r in traffic.results} == {"1.0.0"}, "no request reached the canary"


def test_a_serving_pod_killed_mid_rollout_is_replaced_and_the_rollout_goes_on(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    manual = policy(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}])
    stable = start_v1(cluster, namespace, models, manual)
    traffic = load(NAME, models.x, rate=40, duration=180)
    traffic.start()
    deploy(cluster, namespace, models.good_v2, "2.0.0", manual)
    paused = wait_status(cluster, namespace, lambda s: s.get("phase") == "Paused", "paused")
    canary = paused["canary"]["name"]
    (victim,) = pods_of(cluster, namespace, canary)
    doomed = pods_of(cluster, namespace, stable)[0]
    cluster.kubectl("delete", "pod", "-n", namespace, victim, doomed, "--grace-period=0", "--force")
    wait_until(
        lambda: [p for p in pods_of(cluster, namespace, canary, ready=True) if p != victim],
        timeout=90,
        what="a new canary pod, ready",
    )
    wait_until(
        lambda: (
            len([p for p in pods_of(cluster, namespace, stable, ready=True) if p != doomed])
            == len(pods_of(cluster, namespace, stable))
        ),
        timeout=90,
        what="stable back to full strength",
    )
    held = status(cluster, namespace)
    assert held["phase"] == "Paused", held
    assert held["canary"]["name"] == canary
    canary_cli(cluster, namespace, "promote")
    final = wait_status(
        cluster,
        namespace,
        lambda s: s.get("phase") == "Healthy" and s["stable"]["modelVersion"] == "2.0.0",
        "promoted",
    )
    assert final["history"][0]["outcome"] == "Promoted"
