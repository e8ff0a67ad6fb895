"""Operator benchmark on the local control plane (kwok, client QPS limits off).

Creates N ModelDeployments (default 1,000, one replica each) in one namespace with the operator
running as a real process, and reports: the time until all are Healthy/Ready, the operator's
peak RSS, its CPU time during the burst, and its CPU use over a minute of idleness afterwards.

    make bench-operator            # or: .venv/bin/python -m tests.bench.bench_operator --count 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from tests.e2e.cluster import Cluster, start_local_cluster, stop_local_cluster
from tests.e2e.operator import OperatorProcess, apply_crds

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def manifest(i: int) -> dict[str, object]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{i:04d}"},
        "spec": {
            "model": {"uri": f"https://models.example.org/m{i}.onnx", "version": "1.0.0"},
            "serving": {"replicas": 1},
        },
    }


def count_ready(cluster: Cluster, namespace: str) -> int:
    items = cluster.custom.list_namespaced_custom_object(
        "canarium.dev", "v1alpha1", namespace, "modeldeployments"
    )["items"]
    ready = 0
    for obj in items:
        status = obj.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        cond = conditions.get("Ready", {})
        if (
            cond.get("status") == "True"
            and cond.get("observedGeneration") == obj["metadata"]["generation"]
        ):
            ready += 1
    return ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--cluster-name", default="canarium-bench")
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args()

    # A cluster of its own: the burst must not disturb (or be disturbed by) anything else.
    kubeconfig, kubectl = start_local_cluster(args.cluster_name)
    cluster = Cluster(kubeconfig, kubectl, local=True)
    apply_crds(cluster)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    operator = OperatorProcess(cluster, namespace, log_dir, "--workers", "16").start()
    assert operator.proc is not None
    pid = operator.proc.pid
    try:
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: cluster.custom.create_namespaced_custom_object(
                        "canarium.dev", "v1alpha1", namespace, "modeldeployments", manifest(i)
                    ),
                    range(args.count),
                )
            )
        created = time.monotonic() - started
        ready = 0
        while ready < args.count:
            if time.monotonic() - started > args.timeout:
                print(f"timeout: {ready}/{args.count} ready", file=sys.stderr)
                return 1
            time.sleep(1.0)
            ready = count_ready(cluster, namespace)
        all_ready = time.monotonic() - started
        burst_cpu = cpu_seconds(pid) - cpu_before
        time.sleep(5)  # let the last watch events settle
        idle_before = cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        idle_cpu = cpu_seconds(pid) - idle_before
        result = {
            "modeldeployments": args.count,
            "created_in_s": round(created, 1),
            "all_ready_in_s": round(all_ready, 1),
            "ready_per_s": round(args.count / all_ready, 1),
            "operator_cpu_s_during_burst": round(burst_cpu, 1),
            "operator_peak_rss_mib": round(peak_rss_mib(pid), 1),
            "idle_seconds": args.idle_seconds,
            "operator_idle_cpu_percent": round(100 * idle_cpu / args.idle_seconds, 2),
        }
        print(json.dumps(result, indent=2))
        print(
            f"\n{args.count} ModelDeployments Ready in {all_ready:.1f}s "
            f"({args.count / all_ready:.1f}/s); operator peak RSS {result['operator_peak_rss_mib']}"
            f" MiB; idle CPU {result['operator_idle_cpu_percent']}% over {args.idle_seconds:.0f}s"
        )
        return 0
    finally:
        operator.stop()
        if args.keep_cluster:
            cluster.core.delete_namespace(namespace, propagation_policy="Background")
        else:
            stop_local_cluster(args.cluster_name)


if __name__ == "__main__":
    sys.exit(main())
