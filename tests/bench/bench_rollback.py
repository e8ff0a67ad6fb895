"""Rollback timing: how long a broken canary takes traffic before all of it is back on stable.

The operator runs as a real process against the local control plane; every simulated pod gets
a real model server at its IP; load goes where the entry Service sends it. The canary's model
rejects the live inputs (every answer a 4xx). Measured from the first request a canary pod
answers to the last request routed to a canary pod, and reported as a multiple of the analysis
interval. Target: at most failureLimit + 1 intervals plus a few seconds (the first interval
starts with a snapshot; failureLimit failed intervals roll back).

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
from tests.e2e.load import LoadGenerator
from tests.e2e.models import build_e2e_models, model_deployment
from tests.e2e.operator import OperatorProcess, apply_crds
from tests.e2e.pods import ServingPods

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


def one_run(
    cluster: Cluster, workdir: Path, models: Any, interval: int, failure_limit: int
) -> dict[str, float]:
    namespace = f"bench-rollback-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    operator = OperatorProcess(cluster, namespace, workdir).start()
    pods = ServingPods(cluster, namespace, workdir / namespace).start()
    load: LoadGenerator | None = None
    try:
        rollout = {"policy": policy(interval, failure_limit)}
        cluster.apply(
            model_deployment(NAME, models.good_v1, replicas=4, rollout=rollout), namespace
        )
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=60s"
        )
        pods.wait_serving(count=4, timeout=60)
        load = LoadGenerator(
            cluster, namespace, NAME, models.x, rate=80, duration=300, probe=pods.probe_ready
        )
        load.start()
        cluster.apply(
            model_deployment(
                NAME, models.broken, version="2.0.0-broken", replicas=4, rollout=rollout
            ),
            namespace,
        )

        def degraded() -> bool:
            got = cluster.get_json("mdep", NAME, "-n", namespace).get("status") or {}
            return got.get("phase") == "Degraded"

        wait_until(degraded, timeout=interval * (failure_limit + 4) + 60, what="rollback")
        time.sleep(3)  # the last in-flight requests
        results = list(load.results)
        canary = cluster.get_json("mdep", NAME, "-n", namespace)["status"]["canary"]["name"]
        revision_at = {ip: p.revision for ip, p in pods.by_ip().items()}
        to_canary = [r for r in results if revision_at.get(r.ip) == canary]
        if not to_canary:
            raise AssertionError("the canary never got traffic")
        first, last = min(r.t for r in to_canary), max(r.t for r in to_canary)
        after = [r for r in results if r.t > last]
        assert after
        assert all(revision_at.get(r.ip) != canary for r in after)
        seconds = last - first
        return {
            "seconds": round(seconds, 2),
            "intervals": round(seconds / interval, 2),
            "canary_requests": len(to_canary),
            "canary_errors": sum(1 for r in to_canary if r.status != 200),
        }
    finally:
        if load is not None:
            load.stop()
        pods.stop()
        operator.stop()
        cluster.core.delete_namespace(namespace, propagation_policy="Background")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=int, default=5, help="analysis interval, seconds")
    parser.add_argument("--failure-limit", type=int, default=2)
    args = parser.parse_args()

    kubeconfig, kubectl = start_local_cluster()
    cluster = Cluster(kubeconfig, kubectl, local=True)
    apply_crds(cluster)
    with tempfile.TemporaryDirectory(prefix="canarium-bench-rollback-") as tmp:
        workdir = Path(tmp)
        models = build_e2e_models(workdir / "models")
        runs = [
            one_run(cluster, workdir, models, args.interval, args.failure_limit)
            for _ in range(args.runs)
        ]
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
