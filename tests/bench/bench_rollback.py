"""Rollback timing: how long a broken canary takes traffic before all of it is back on stable.

The operator runs in the local cluster from its image (manifests/install), the serving pods are
real containers on the real node, and load goes to the entry Service's ClusterIP (kube-proxy).
The canary's model rejects the live inputs (every answer a 400, which no stable pod gives).
Measured from the first request the canary answers to the last one, and reported as a
multiple of the analysis interval. Target: at most failureLimit + 1 intervals plus a few
seconds (the first interval starts with a snapshot; failureLimit failed intervals roll back).

    make bench-rollback   # or: .venv/bin/python -m tests.bench.bench_rollback --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.cluster import Cluster, start_local_cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import build_e2e_models, in_configmap, model_deployment

NAME = "iris"


def policy(interval: int, failure_limit: int) -> dict[str, Any]:
    return {
        "steps": [{"setWeight": 25}, {"pause": {"duration": "10m"}}, {"setWeight": 100}],
        "analysis": {
            "interval": f"{interval}s",
            "failureLimit": failure_limit,
            "minSamples": 10,
            "checks": {"errorRate": {"max": 0.05}},
        },
    }


def one_run(cluster: Cluster, models: Any, interval: int, failure_limit: int) -> dict[str, float]:
    namespace = f"bench-rollback-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    load: LoadGenerator | None = None
    try:
        rollout = {"policy": policy(interval, failure_limit)}
        good, broken = (
            in_configmap(cluster, namespace, m) for m in (models.good_v1, models.broken)
        )
        cluster.apply(model_deployment(NAME, good, replicas=4, rollout=rollout), namespace)
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=180s",
            timeout=190,
        )  # fmt: skip
        load = LoadGenerator(cluster, namespace, NAME, models.x, rate=80, duration=300)
        load.start()
        cluster.apply(
            model_deployment(NAME, broken, version="2.0.0-broken", replicas=4, rollout=rollout),
            namespace,
        )

        def degraded() -> bool:
            got = cluster.get_json("mdep", NAME, "-n", namespace).get("status") or {}
            return got.get("phase") == "Degraded"

        wait_until(degraded, timeout=interval * (failure_limit + 4) + 60, what="rollback")
        time.sleep(3)  # the last in-flight requests
        results = list(load.results)
        to_canary = [r for r in results if r.status == 400]  # only the broken model says 400
        if not to_canary:
            raise AssertionError("the canary never got traffic")
        first, last = min(r.t for r in to_canary), max(r.t for r in to_canary)
        after = [r for r in results if r.t > last]
        assert after
        assert {r.status for r in after} == {200}, "all traffic back on stable, answered"
        seconds = last - first
        return {
            "seconds": round(seconds, 2),
            "intervals": round(seconds / interval, 2),
            "canary_requests": len(to_canary),
            "failed": sum(1 for r in results if r.status not in (200, 400)),
        }
    finally:
        if load is not None:
            load.stop()
        cluster.core.delete_namespace(namespace, propagation_policy="Background")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=int, default=5, help="analysis interval, seconds")
    parser.add_argument("--failure-limit", type=int, default=2)
    args = parser.parse_args()

    kubeconfig, kubectl = start_local_cluster()
    cluster = Cluster(kubeconfig, kubectl, local=True)
    operator = InstalledOperator(cluster).install()
    try:
        with tempfile.TemporaryDirectory(prefix="canarium-bench-rollback-") as tmp:
            models = build_e2e_models(Path(tmp) / "models")
            runs = [
                one_run(cluster, models, args.interval, args.failure_limit)
                for _ in range(args.runs)
            ]
    finally:
        operator.uninstall()
    target = args.failure_limit + 1
    median = statistics.median(r["intervals"] for r in runs)
    print(json.dumps({"interval_s": args.interval, "failureLimit": args.failure_limit,
                      "runs": runs}, indent=2))  # fmt: skip
    print(
        f"\nbroken canary took traffic for {median:.2f} analysis intervals (median of "
        f"{len(runs)}; {statistics.median(r['seconds'] for r in runs):.1f}s at "
        f"{args.interval}s) — target <= failureLimit + 1 = {target} intervals + a few seconds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
