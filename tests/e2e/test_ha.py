"""The installed operator's two replicas behind their Lease, on the real node, with a canary
rollout under way: the leader's process SIGKILLed at random moments (the standby takes over
within one lease duration and the rollout ends as it would have, with no step lost, no
duplicate revision and no failed request), and a leader frozen past its renew deadline (it is
fenced: once it wakes it writes nothing and ends, to come back as a standby)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import NAMESPACE, InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels
from tests.e2e.test_rollout import NAME, deploy, failed, policy, start_v1, status

pytestmark = pytest.mark.usefixtures("restricted")

LEASE_DURATION = 15.0  # the install's (controller-runtime's default)
RETRY_PERIOD = 2.0
# A standby notes the leader's last renewal at its next try (up to a jittered retry period
# later), takes over a lease duration after that, at a try of its own (another retry period at
# most); then the test's poll sees it.
TAKEOVER_BOUND = LEASE_DURATION + 2 * 1.2 * RETRY_PERIOD + 2.0


def container_pids(cluster: Cluster, pod: str) -> list[int]:
    """The host PIDs of the operator container of `pod` (its cgroup names its container ID;
    the real node runs on this machine)."""
    body = cluster.get_json("pod", "-n", NAMESPACE, pod)
    (container,) = body["status"]["containerStatuses"]
    container_id = container["containerID"].split("://", 1)[1]
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id in (proc / "cgroup").read_text():
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    assert pids, f"no process of {pod}'s container {container_id[:12]} on this machine"
    return pids


def restarts(cluster: Cluster, pod: str) -> int:
    body = cluster.get_json("pod", "-n", NAMESPACE, pod)
    (container,) = body["status"]["containerStatuses"]
    return int(container["restartCount"])


def wait_new_holder(operator: InstalledOperator, old_identity: str, timeout: float) -> str:
    identity: str = wait_until(
        lambda: (h := operator.lease().get("holderIdentity")) and h != old_identity and h,
        timeout=timeout,
        interval=0.2,
        what="another replica holding the Lease",
    )
    return identity


def kill_leader(
    cluster: Cluster, namespace: str, operator: InstalledOperator, steps_seen: list[int]
) -> float:
    """SIGKILL the leader's process; the seconds until another replica holds the Lease. The
    rollout's step is recorded meanwhile (it must never go back)."""
    leader = operator.pod()
    identity = operator.lease()["holderIdentity"]
    before = restarts(cluster, leader)
    for pid in container_pids(cluster, leader):
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    holder = None
    while holder is None and time.monotonic() - killed < 2 * LEASE_DURATION:
        step = status(cluster, namespace).get("currentStep")
        if step is not None:
            steps_seen.append(int(step))
        current = operator.lease().get("holderIdentity")
        holder = current if current and current != identity else None
        time.sleep(0.2)
    assert holder is not None, f"no replica took the Lease within {2 * LEASE_DURATION}s"
    took = time.monotonic() - killed
    wait_until(
        lambda: restarts(cluster, leader) > before,
        timeout=60,
        what="the killed container restarted",
    )
    return took


@pytest.fixture
def standby(operator: InstalledOperator, cluster: Cluster) -> Iterator[InstalledOperator]:
    """Both replicas up and one of them leading. Afterwards the pods whose container was
    killed are replaced (deleted with grace: a leader releases the Lease), so the next tests
    find two fresh replicas, as the install left them."""
    operator.wait_ready()
    assert len(operator.pods()) == 2, operator.pods()
    yield operator
    for pod in operator.pods():
        if restarts(cluster, pod) > 0:
            cluster.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--wait=true", timeout=120)
    operator.wait_ready()
    assert len(operator.pods()) == 2, operator.pods()


def test_the_standby_takes_over_a_leader_killed_at_random_moments_mid_rollout(
    cluster: Cluster,
    namespace: str,
    standby: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    operator = standby
    steps = [
        {"setWeight": 20},
        {"pause": {"duration": "15s"}},
        {"setWeight": 50},
        {"pause": {"duration": "15s"}},
        {"setWeight": 100},
    ]
    rollout = policy(steps=steps)
    old = start_v1(cluster, namespace, models, rollout)
    traffic = load(NAME, models.x, rate=60, duration=300)
    traffic.start()
    transitions = int(operator.lease().get("leaseTransitions") or 0)
    deploy(cluster, namespace, models.good_v2, "2.0.0", rollout)
    wait_until(
        lambda: (status(cluster, namespace).get("canary") or {}).get("weight") == 20,
        timeout=60,
        what="the canary at 20%",
    )

    seed = int(os.environ.get("CANARIUM_HA_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    steps_seen: list[int] = []
    takeovers: list[float] = []
    for _ in range(2):
        time.sleep(rng.uniform(0.5, 6.0))
        takeovers.append(kill_leader(cluster, namespace, operator, steps_seen))

    def promoted(st: dict[str, Any]) -> bool:
        if st.get("currentStep") is not None:
            steps_seen.append(int(st["currentStep"]))
        return st.get("phase") == "Healthy" and st["stable"]["modelVersion"] == "2.0.0"

    def promoted_status() -> dict[str, Any] | None:
        st = status(cluster, namespace)
        return st if promoted(st) else None

    final = wait_until(
        promoted_status,
        timeout=180,
        what=f"2.0.0 promoted (seed {seed})",
    )
    print(f"seed {seed}: takeovers after {', '.join(f'{t:.1f}s' for t in takeovers)}")
    for took in takeovers:
        assert took <= TAKEOVER_BOUND, (takeovers, seed)
    assert int(operator.lease()["leaseTransitions"]) >= transitions + 2
    assert steps_seen == sorted(steps_seen), f"a step went back: {steps_seen} (seed {seed})"
    # One promotion, one previous revision, and exactly the two revisions' Deployments.
    (promotion,) = final["history"]
    assert promotion["modelVersion"] == "2.0.0"
    assert promotion["outcome"] == "Promoted"
    assert promotion["revision"] == final["stable"]["name"] != old
    deployments = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"canarium.dev/deployment={NAME}"
    )["items"]
    names = sorted(d["metadata"]["name"] for d in deployments)
    assert len(names) == len(set(names))
    assert set(names) <= {old, final["stable"]["name"]}, names
    assert final["stable"]["name"] in names
    rs_owners = [
        ref["name"]
        for rs in cluster.get_json("replicasets", "-n", namespace)["items"]
        for ref in rs["metadata"].get("ownerReferences") or []
    ]
    assert set(rs_owners) <= set(names), "a ReplicaSet of a Deployment that is gone"
    # The data plane never noticed: not one request failed.
    traffic.stop()
    assert traffic.results, "traffic flowed"
    assert not failed(traffic), failed(traffic)[:10]


def test_a_frozen_leader_is_fenced_writes_nothing_when_it_wakes_and_ends(
    cluster: Cluster,
    namespace: str,
    standby: InstalledOperator,
    models: E2EModels,
) -> None:
    operator = standby
    start_v1(cluster, namespace, models, policy(steps=[{"setWeight": 100}]))
    leader = operator.pod()
    identity = operator.lease()["holderIdentity"]
    before = restarts(cluster, leader)
    pids = container_pids(cluster, leader)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        new_identity = wait_new_holder(operator, identity, timeout=2 * LEASE_DURATION)
        took = time.monotonic() - frozen
        took_over_at = time.time()
        new_leader = new_identity.rsplit("_", 1)[0]
        assert new_leader != leader
        # Work for both: the new leader does it while the old one sleeps with it queued.
        deploy(cluster, namespace, models.good_v2, "2.0.0", policy(steps=[{"setWeight": 100}]))
        wait_until(
            lambda: (status(cluster, namespace).get("stable") or {}).get("modelVersion") == "2.0.0",
            timeout=120,
            what="2.0.0 rolled out by the new leader",
        )
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    # Awake, past its renew deadline: fenced at once, it sees the Lease gone and ends.
    wait_until(
        lambda: restarts(cluster, leader) > before,
        timeout=60,
        what="the woken leader ended (its container restarted)",
    )
    old_log = cluster.kubectl(
        "logs", "-n", NAMESPACE, leader, "--previous", "--tail=-1", check=False
    ).stdout
    assert "lost the leader Lease" in old_log, old_log[-3000:]
    assert operator.lease()["holderIdentity"] == new_identity  # the new leader kept it
    print(f"the standby took over {took:.1f}s after the leader froze")
    assert took <= TAKEOVER_BOUND
    # Nothing the old leader wrote after the takeover: every Event since is the new leader's.
    events = cluster.get_json("events", "-n", namespace)["items"]
    late = [
        (e.get("reportingInstance"), e.get("reason"))
        for e in events
        if e.get("reportingComponent") == "canarium" and _event_time(e) >= took_over_at
    ]
    assert late, "the new leader recorded the rollout"
    assert {instance for instance, _ in late} == {new_leader}, late
    st = status(cluster, namespace)
    assert st["phase"] == "Healthy"
    assert [(h["modelVersion"], h["outcome"]) for h in st["history"]] == [("2.0.0", "Promoted")]


def _event_time(event: dict[str, Any]) -> float:
    from datetime import datetime

    stamp = (
        event.get("eventTime")
        or event.get("lastTimestamp")
        or event["metadata"]["creationTimestamp"]
    )
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_leader_stopped_gracefully_hands_the_lease_over_at_once(
    cluster: Cluster, namespace: str, standby: InstalledOperator
) -> None:
    """A rolling update or a drain: SIGTERM releases the Lease on the way out, so the standby
    takes over at its next try instead of waiting a lease duration out."""
    operator = standby
    leader = operator.pod()
    identity = operator.lease()["holderIdentity"]
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, leader, "--wait=false")
    asked = time.monotonic()
    new_identity = wait_new_holder(operator, identity, timeout=2 * LEASE_DURATION)
    took = time.monotonic() - asked
    print(f"handed over {took:.1f}s after the leader was asked to stop")
    assert new_identity.rsplit("_", 1)[0] != leader
    # Released: within the standby's next try or two, not a lease duration later.
    assert took <= 2 * 1.2 * RETRY_PERIOD + 3.0, f"the Lease was waited out ({took:.1f}s)"
