"""Faults with a canary rollout under way (issue 14): kube-apiserver restarted, etcd restarted,
the operator's connection to the API server cut for 30 s, Prometheus stopped mid-analysis.
Each rollout must end where it would have without the fault, with exactly the revisions it
should have (no orphan, no duplicate), a status that never went back (steps, analysis
intervals, history) and no failed request (serving goes through kube-proxy, which keeps its
rules while the control plane is away).

The leader SIGKILLed mid-rollout is tests/e2e/test_ha.py's. The API server and etcd restarts
use the in-cluster operator (its two replicas behind their Lease, as users run it); the cut runs
the operator as a local process whose kubeconfig points at a proxy (tests/e2e/tcpproxy.py) that
resets every open connection and blackholes new ones for 30 s, so a watch that waits on one
never hears back: the operator must notice by itself and resync."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.cluster import Cluster, restart_component, wait_until
from tests.e2e.incluster import DEPLOYMENT, NAMESPACE, InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels
from tests.e2e.operator import OperatorProcess
from tests.e2e.prometheus import Prometheus
from tests.e2e.tcpproxy import TCPProxy
from tests.e2e.test_rollout import NAME, deploy, failed, policy, start_v1, status

pytestmark = pytest.mark.usefixtures("restricted")

INTERVAL = 4.0  # policy()'s analysis interval
# The checks of these rollouts: errors and prediction drift, judged through the faults.
# latencyP99 is left out: at this traffic (a canary of 12 requests/s) slow requests are a few
# per minute, and a comparison that leans worse on a few of them rightly holds the step until
# it has seen enough, however long that takes (a canary 1 slow in its first 29 requests held
# a step for 14 intervals: 100 s after the connection came back, where this test allows 90;
# 2026-12-04). That is the judge's behaviour (tests/unit/test_analysis_judge.py), not the
# faults'.
CHECKS = {"errorRate": {"max": 0.05}, "predictionDrift": {"maxPSI": 0.25}}


@dataclass
class Progress:
    """What the test saw of the status while it polled: it must never go back."""

    steps: list[int] = field(default_factory=list)
    intervals: list[int] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def note(self, st: dict[str, Any]) -> dict[str, Any]:
        if st.get("currentStep") is not None:
            self.steps.append(int(st["currentStep"]))
        analysis = st.get("analysis") or {}
        if st.get("canary") and analysis.get("intervals") is not None:
            self.intervals.append(int(analysis["intervals"]))
        if analysis.get("lastVerdict") and st.get("canary"):
            self.verdicts.append(str(analysis["lastVerdict"]))
        weight = (st.get("canary") or {}).get("weight")
        if weight is not None:
            self.weights.append(int(weight))
        if st.get("phase"):
            self.phases.append(str(st["phase"]))
        return st

    def __str__(self) -> str:
        def runs(seen: list[Any]) -> list[Any]:
            return [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]

        return (
            f"steps {runs(self.steps)}, intervals {runs(self.intervals)}, weights "
            f"{runs(self.weights)}, verdicts {runs(self.verdicts)}, phases {runs(self.phases)}"
        )

    def assert_never_went_back(self) -> None:
        assert self.steps == sorted(self.steps), f"a step went back: {self.steps}"
        assert self.intervals == sorted(self.intervals), (
            f"analysis intervals went back (a status lost): {self.intervals}"
        )
        assert self.weights == sorted(self.weights), f"the weight went back: {self.weights}"
        assert "Degraded" not in self.phases, self.phases


def poll(cluster: Cluster, namespace: str, progress: Progress) -> dict[str, Any]:
    return progress.note(status(cluster, namespace))


def wait_promoted(
    cluster: Cluster, namespace: str, progress: Progress, version: str, timeout: float
) -> dict[str, Any]:
    def promoted() -> dict[str, Any] | None:
        try:
            st = poll(cluster, namespace, progress)
        except AssertionError:  # kubectl failed: the API server is still coming back
            return None
        done = st.get("phase") == "Healthy" and (st.get("stable") or {}).get("modelVersion")
        return st if done == version else None

    try:
        return wait_until(promoted, timeout=timeout, interval=0.5, what=f"{version} promoted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status(cluster, namespace)}") from None


def revisions(cluster: Cluster, namespace: str) -> list[str]:
    """The names of the ModelDeployment's Deployments (its revisions), as listed."""
    items = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"canarium.dev/deployment={NAME}"
    )["items"]
    return [d["metadata"]["name"] for d in items]


def assert_promoted_cleanly(
    cluster: Cluster,
    namespace: str,
    final: dict[str, Any],
    old: str,
    progress: Progress,
    rollout_seconds: float,
    interval: float = INTERVAL,
) -> None:
    """One Promoted entry for 2.0.0, the right conditions, a status that never went back,
    analysis intervals counted once each, and only the promoted revision left."""
    progress.assert_never_went_back()
    (promotion,) = final["history"]
    assert (promotion["modelVersion"], promotion["outcome"]) == ("2.0.0", "Promoted")
    new = final["stable"]["name"]
    assert promotion["revision"] == new != old
    assert not final.get("canary"), final
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
        "Reconciling": "False",
        "Stalled": "False",
    }, final["conditions"]
    # Every interval judged once: no more than the rollout lasted allows, and at least one per
    # analysed step (a re-measured interval counted twice would show as too many).
    assert progress.intervals, "analysis intervals were seen in the status"
    most = math.ceil(rollout_seconds / interval) + 1
    assert 2 <= max(progress.intervals) <= most, (progress.intervals, rollout_seconds)
    # No orphan, no duplicate: the old revision goes once drained, and the new one is the only
    # Deployment, with its one ReplicaSet.
    wait_until(
        lambda: revisions(cluster, namespace) == [new],
        timeout=90,
        what=f"only {new} left",
    )

    def replica_sets() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = cluster.get_json(
            "replicasets", "-n", namespace, "-l", f"canarium.dev/deployment={NAME}"
        )["items"]
        return items

    def owners() -> set[str]:
        refs = (rs["metadata"].get("ownerReferences") or [] for rs in replica_sets())
        return {ref["name"] for refs_of in refs for ref in refs_of}

    # The garbage collector removes the old revision's ReplicaSets a moment later.
    wait_until(lambda: owners() == {new}, timeout=60, what=f"only ReplicaSets of {new}")
    live = [rs["metadata"]["name"] for rs in replica_sets() if rs["spec"].get("replicas")]
    assert len(live) == 1, live


def assert_no_failed_request(traffic: LoadGenerator) -> None:
    traffic.stop()
    assert len(traffic.results) > 100, "traffic flowed"
    assert not failed(traffic), failed(traffic)[:10]
    assert {r.version for r in traffic.results} == {"1.0.0", "2.0.0"}


def restarts(cluster: Cluster) -> dict[str, int]:
    pods = cluster.get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=" + DEPLOYMENT)
    return {
        p["metadata"]["name"]: sum(c["restartCount"] for c in p["status"]["containerStatuses"])
        for p in pods["items"]
        if p["status"].get("containerStatuses")
    }


@pytest.fixture
def replicas(operator: InstalledOperator, cluster: Cluster) -> Iterator[InstalledOperator]:
    """The installed operator, both replicas up. A replica that lost its Lease while the
    control plane was away ends (fenced) and is restarted by the kubelet; afterwards those pods
    are replaced, so the next tests find two fresh replicas as the install left them."""
    operator.wait_ready()
    yield operator
    for pod, count in restarts(cluster).items():
        if count > 0:
            cluster.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--wait=true", timeout=120)
    operator.wait_ready()


def canary_at_20_percent(
    cluster: Cluster,
    namespace: str,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    first_pause: str,
) -> tuple[str, LoadGenerator, Progress, float]:
    """v1 serving under 60 requests/s, then v2 applied with the steps 20% (`first_pause`), 50%
    (10 s), 100%, judged on CHECKS, until its canary takes 20%: (v1's revision, the traffic,
    the status seen so far, when v2 was applied)."""
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {"duration": first_pause}},
        {"setWeight": 50},
        {"pause": {"duration": "10s"}},
        {"setWeight": 100},
    ]
    rollout = policy(steps=steps, checks=CHECKS)
    old = start_v1(cluster, namespace, models, rollout)
    traffic = load(NAME, models.x, rate=60, duration=300)
    traffic.start()
    progress = Progress()
    started = time.monotonic()
    deploy(cluster, namespace, models.good_v2, "2.0.0", rollout)
    wait_until(
        lambda: (poll(cluster, namespace, progress).get("canary") or {}).get("weight") == 20,
        timeout=60,
        what="the canary at 20%",
    )
    return old, traffic, progress, started


def control_plane_restart_mid_rollout(
    cluster: Cluster,
    namespace: str,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    component: str,
    down: float,
) -> None:
    old, traffic, progress, started = canary_at_20_percent(cluster, namespace, models, load, "20s")
    # Mid-step, with an analysis interval under way.
    wait_until(
        lambda: (poll(cluster, namespace, progress).get("analysis") or {}).get("intervals"),
        timeout=30,
        what="a first analysis interval",
    )
    took = restart_component(component, down)
    print(f"{component}: away and back (/readyz) in {took:.1f}s")
    final = wait_promoted(cluster, namespace, progress, "2.0.0", timeout=180)
    rollout_seconds = time.monotonic() - started
    print(f"promoted {rollout_seconds:.0f}s after 2.0.0 was applied; status seen: {progress}")
    assert_promoted_cleanly(cluster, namespace, final, old, progress, rollout_seconds)
    assert_no_failed_request(traffic)


def test_kube_apiserver_restarted_mid_rollout(
    cluster: Cluster,
    namespace: str,
    replicas: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    control_plane_restart_mid_rollout(cluster, namespace, models, load, "kube-apiserver", 5)


def test_etcd_restarted_mid_rollout(
    cluster: Cluster,
    namespace: str,
    replicas: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    control_plane_restart_mid_rollout(cluster, namespace, models, load, "etcd", 5)


# --- the operator's connection to the API server cut --------------------------------------------
@pytest.fixture
def no_installed_operator(cluster: Cluster) -> Iterator[None]:
    """The installed operator (if a test installed it) scaled to zero meanwhile: it watches
    every namespace, and the test's own operator process must be the only one."""
    got = cluster.kubectl("get", "deploy", "-n", NAMESPACE, DEPLOYMENT, "-o", "json", check=False)
    count = int(json.loads(got.stdout)["spec"]["replicas"]) if got.returncode == 0 else 0
    installed = InstalledOperator(cluster)
    if count:
        installed.stop()
        wait_until(lambda: not installed.pods(), timeout=60, what="no operator pod left")
    yield
    if count:
        installed.start()


def proxied_kubeconfig(cluster: Cluster, proxy: TCPProxy, path: Path) -> Cluster:
    """The cluster as seen through `proxy`: the same kubeconfig with the server's address
    replaced (the certificate names 127.0.0.1, the port is not checked)."""
    conf = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in conf["clusters"]:
        server = urlsplit(entry["cluster"]["server"])
        entry["cluster"]["server"] = f"{server.scheme}://{proxy.address}"
    path.write_text(yaml.safe_dump(conf))
    return Cluster(path, cluster.kubectl_bin, local=cluster.local)


def api_server_address(cluster: Cluster) -> tuple[str, int]:
    conf = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = conf["clusters"]
    server = urlsplit(entry["cluster"]["server"])
    assert server.hostname, server
    assert server.port, server
    return server.hostname, server.port


def test_the_operators_connection_cut_for_30s_mid_rollout(
    cluster: Cluster,
    namespace: str,
    crds: None,
    no_installed_operator: None,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    tmp_path: Path,
) -> None:
    with TCPProxy(*api_server_address(cluster)) as proxy:
        through = proxied_kubeconfig(cluster, proxy, tmp_path / "kubeconfig.yaml")
        operator = OperatorProcess(through, namespace, tmp_path).start()
        try:
            connection_cut_mid_rollout(cluster, namespace, models, load, proxy, operator)
        finally:
            operator.stop()
            print(f"operator log: {operator.log_path}")


def connection_cut_mid_rollout(
    cluster: Cluster,
    namespace: str,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    proxy: TCPProxy,
    operator: OperatorProcess,
) -> None:
    old, traffic, progress, started = canary_at_20_percent(cluster, namespace, models, load, "10s")
    assert proxy.open_connections() > 0, "the operator's watches go through the proxy"
    proxy.cut()
    cut_at = time.monotonic()
    log_at_cut = len(operator.log())
    frozen = poll(cluster, namespace, progress)
    # While cut the operator writes nothing: the status stays as it was (this client's own
    # connection does not go through the proxy).
    while time.monotonic() - cut_at < 30:
        st = poll(cluster, namespace, progress)
        assert st.get("currentStep") == frozen.get("currentStep"), st
        assert st.get("analysis") == frozen.get("analysis"), "a status written while cut"
        assert operator.running(), operator.log()[-3000:]
        time.sleep(1)
    forwarded = proxy.forwarded
    print(f"cut: {proxy.dropped} connections reset, {proxy.blackholed} blackholed")
    proxy.restore()
    restored_at = time.monotonic()
    final = wait_promoted(cluster, namespace, progress, "2.0.0", timeout=120)
    resumed = time.monotonic() - restored_at
    rollout_seconds = time.monotonic() - started
    print(
        f"promoted {resumed:.0f}s after the connection came back ({rollout_seconds:.0f}s in all);"
        f" {proxy.forwarded - forwarded} new connections; status seen: {progress}"
    )
    assert proxy.blackholed > 0, "the operator tried to reach the API server while cut"
    assert proxy.forwarded > forwarded, "the operator reconnected"
    assert operator.running(), "the operator kept running"
    # The rollout went on from where it was: the remaining steps took about what they take
    # (two pauses of 10 s and the analysis that holds them), not a watch timeout.
    assert resumed < 90, resumed
    assert_promoted_cleanly(cluster, namespace, final, old, progress, rollout_seconds)
    assert_no_failed_request(traffic)
    print(f"operator log during and after the cut:\n{operator.log()[log_at_cut:][-4000:]}")


# --- Prometheus stopped mid-analysis --------------------------------------------------------------
def test_prometheus_stopped_mid_analysis_holds_and_resumes(
    cluster: Cluster,
    namespace: str,
    replicas: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    prometheus: Prometheus,
) -> None:
    """Analysis with no answer from Prometheus is no data: Inconclusive, the step holds past
    its pause, never a failure nor a rollback; once Prometheus is back the intervals pass and
    the canary is promoted."""
    interval = 5.0
    pause = 30.0  # long enough that an interval of it passes well before its end
    prometheus.watch(namespace)
    rollout = policy(
        interval=f"{interval:.0f}s",
        min_samples=15,
        provider={"prometheus": {"address": prometheus.url}},
        checks=CHECKS,
        steps=[{"setWeight": 50}, {"pause": {"duration": f"{pause:.0f}s"}}, {"setWeight": 100}],
    )
    try:
        old = start_v1(cluster, namespace, models, rollout)
        traffic = load(NAME, models.x, rate=60, duration=300)
        traffic.start()
        progress = Progress()
        started = time.monotonic()
        deploy(cluster, namespace, models.good_v2, "2.0.0", rollout)

        # The pause at 50% (a setWeight step does not wait for analysis; a pause ends only
        # after a Passed interval): stopped once an interval of it passed with Prometheus there.
        def pause_passed() -> dict[str, Any] | None:
            st = poll(cluster, namespace, progress)
            analysis = st.get("analysis") or {}
            passed = st.get("currentStep") == 1 and analysis.get("lastVerdict") == "Passed"
            return st if passed and analysis.get("intervals") else None

        before = wait_until(pause_passed, timeout=90, what="a Passed interval in the pause")
        prometheus.down()
        stopped_at = time.monotonic()
        intervals_at_stop = int(before["analysis"]["intervals"])
        # Away past the pause's end by three intervals: the step holds for want of data and
        # never fails.
        held: list[dict[str, Any]] = []
        while time.monotonic() - stopped_at < pause + 3 * interval:
            st = poll(cluster, namespace, progress)
            held.append(st)
            assert st.get("currentStep") == 1, f"the step moved on without analysis: {st}"
            assert st.get("phase") == "Progressing", st
            assert not st.get("history"), st
            assert (st.get("analysis") or {}).get("failures", 0) == 0, st
            time.sleep(0.5)
        last = held[-1]["analysis"]
        assert last["lastVerdict"] == "Inconclusive", last
        assert last["intervals"] > intervals_at_stop, "intervals judged while it was away"
        assert last["consecutiveInconclusive"] >= 2, last
        reasons = " ".join(m.get("reason") or "" for m in last["measurements"])
        print(f"while Prometheus was away: {last['measurements']}")
        assert reasons, "the measurements say why they are inconclusive"
        prometheus.up()
        back_at = time.monotonic()
        final = wait_promoted(cluster, namespace, progress, "2.0.0", timeout=90)
        rollout_seconds = time.monotonic() - started
        print(
            f"promoted {time.monotonic() - back_at:.0f}s after Prometheus came back "
            f"({rollout_seconds:.0f}s in all); verdicts seen: {progress.verdicts}"
        )
        assert_promoted_cleanly(
            cluster, namespace, final, old, progress, rollout_seconds, interval=interval
        )
        assert_no_failed_request(traffic)
    finally:
        if prometheus.proc is None or prometheus.proc.poll() is not None:
            prometheus.up()
        prometheus.unwatch(namespace)
