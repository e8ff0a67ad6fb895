"""Operator benchmark, side by side with Argo Rollouts, on one local control plane.

One cluster (kwok nodes, hack/cluster.sh with CANARIUM_CONTROL_PLANE_PROFILE=bench: client QPS
limits off, 50 concurrent Deployment/ReplicaSet/EndpointSlice syncs in kube-controller-manager,
so the operator and not the control plane is measured). Each tool in turn, in a namespace of its
own, as a local process with the same client limits (none) and 16 workers (--workers):

- Canarium (`canarium run`): N ModelDeployments, one replica each, an inline canary policy;
- Argo Rollouts v1.10.2 (rollouts-controller, built by hack/argo-rollouts.sh): N Rollouts, one
  replica each, the same canary steps, a stable and a canary Service each (what its user applies
  with it, on the clock, the Services first as Argo CD orders them: a ModelDeployment's operator
  creates its own three, on the clock too).

Per tool: the time until all N are Ready (Healthy), the controller's peak RSS (VmHWM), its
CPU-seconds during that burst, its CPU use over a minute of idleness afterwards; then one
rollout (a new version of one object) and --rollouts (100) started at once: the time until all
are promoted. Canarium's work-queue wait over the burst and over the concurrent rollouts (from
its /metrics) says whether its workers or the API server held them up. Printed as a table with
the ratios and the issue's goals; timings are never asserted (exit 0 unless the benchmark
itself breaks).

    make bench-operator                                     # N = 1,000, both tools
    make bench-operator BENCH_OPERATOR_ARGS="--count 5000"  # N = 5,000
    .venv/bin/python -m tests.bench.bench_operator --count 50 --tools canarium
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.bench import argo_rollouts as argo
from tests.e2e.cluster import Cluster, start_local_cluster, stop_local_cluster
from tests.e2e.operator import OperatorProcess, apply_crds

CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKERS = 16  # reconcile workers / rollout threads of each tool (--workers)
# The same canary steps for both: half the traffic, a short pause, all of it.
STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {"pause": {"duration": "5s"}},
    {"setWeight": 100},
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    return rss_mib(pid, "VmHWM")


def name_of(i: int) -> str:
    return f"model-{i:04d}"


# --- Canarium -------------------------------------------------------------------------------


def model_deployment(i: int, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name_of(i)},
        "spec": {
            "model": {"uri": f"https://models.example.org/m{i}-{version}.onnx", "version": version},
            "serving": {"replicas": 1},
            "rollout": {"policy": {"steps": STEPS}},
        },
    }


def md_patch(i: int, version: str) -> dict[str, Any]:
    return {"spec": {"model": model_deployment(i, version)["spec"]["model"]}}


def md_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    cond = conditions.get("Ready", {})
    return bool(
        cond.get("status") == "True"
        and cond.get("observedGeneration") == obj["metadata"]["generation"]
    )


def md_promoted(obj: dict[str, Any], version: str) -> bool:
    status = obj.get("status") or {}
    return (
        md_ready(obj)
        and obj["spec"]["model"]["version"] == version
        and (status.get("stable") or {}).get("modelVersion") == version
        and not status.get("canary")
    )


# --- the two tools, behind one interface ----------------------------------------------------


class Controller(Protocol):
    def stop(self) -> None: ...


@dataclass
class Tool:
    name: str
    group: str
    version: str
    plural: str
    manifest: Callable[[int, str], dict[str, Any]]
    patch: Callable[[int, str], dict[str, Any]]
    ready: Callable[[dict[str, Any]], bool]
    promoted: Callable[[dict[str, Any], str], bool]
    # Starts the controller on a namespace; returns it and its pid.
    start: Callable[[Cluster, str, Path, int], tuple[Controller, int]]
    # What the user applies with each object (its Services), on the clock, before the object.
    extra_objects: Callable[[int], list[dict[str, Any]]] = field(default=lambda i: [])


QueueSnapshot = tuple[float, float, dict[float, float]]  # count, sum, cumulative buckets


def queue_snapshot(controller: Controller) -> QueueSnapshot | None:
    """The operator's work-queue wait histogram (canarium_workqueue_queue_duration_seconds of
    the ModelDeployment queue), scraped from its /metrics; None for a controller without it."""
    port = getattr(controller, "metrics_port", None)
    if port is None:
        return None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    count = total = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "canarium_workqueue_queue_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("name") != "modeldeployments":
                continue
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
    return count, total, buckets


def queue_wait(before: QueueSnapshot | None, after: QueueSnapshot | None) -> str | None:
    """Between two snapshots: how many keys a worker took, their mean wait in the queue and the
    bucket bound under which 99% of them waited ("mean 12 ms, p99 <= 0.05 s of 3,402")."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    count = after[0] - before[0]
    mean_ms = 1000 * (after[1] - before[1]) / count
    p99 = next(
        (le for le, c in sorted(after[2].items()) if c - before[2].get(le, 0.0) >= 0.99 * count),
        math.inf,
    )
    return f"mean {mean_ms:.3g} ms, p99 <= {p99:g} s, of {count:,.0f}"


def start_canarium(
    cluster: Cluster, namespace: str, log_dir: Path, workers: int
) -> tuple[Controller, int]:
    operator = OperatorProcess(cluster, namespace, log_dir, "--workers", str(workers)).start()
    assert operator.proc is not None
    return operator, operator.proc.pid


def start_argo(
    cluster: Cluster, namespace: str, log_dir: Path, workers: int
) -> tuple[Controller, int]:
    controller = argo.ArgoRolloutsProcess(
        cluster, namespace, log_dir, "--rollout-threads", str(workers)
    ).start()
    assert controller.proc is not None
    return controller, controller.proc.pid


TOOLS = {
    "canarium": Tool(
        "canarium",
        "canarium.dev",
        "v1alpha1",
        "modeldeployments",
        model_deployment,
        md_patch,
        md_ready,
        md_promoted,
        start_canarium,
    ),
    "argo-rollouts": Tool(
        "argo-rollouts",
        argo.GROUP,
        argo.VERSION,
        argo.PLURAL,
        lambda i, version: argo.rollout(name_of(i), version, STEPS),
        lambda i, version: argo.new_version_patch(version),
        argo.healthy,
        argo.promoted,
        start_argo,
        lambda i: argo.services(name_of(i)),
    ),
}


# --- measuring ------------------------------------------------------------------------------


def list_objects(cluster: Cluster, tool: Tool, namespace: str) -> list[dict[str, Any]]:
    """One list, parsed straight from the bytes (the client's deserializer is several times
    slower, and this process shares the machine's two cores with what it measures)."""
    response: Any = cluster.custom.list_namespaced_custom_object(
        tool.group, tool.version, namespace, tool.plural, _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


@dataclass
class Run:
    """One tool's objects in one namespace."""

    cluster: Cluster
    tool: Tool
    namespace: str
    pool: ThreadPoolExecutor
    timeout: float
    # Seconds until the first, half and 90% of the last wait's objects were done.
    milestones: dict[str, float] = field(default_factory=dict)

    def create(self, count: int) -> None:
        """Each object as its user applies it: the Services it names, then the object."""
        custom, core, tool = self.cluster.custom, self.cluster.core, self.tool

        def apply(i: int) -> None:
            for service in tool.extra_objects(i):
                core.create_namespaced_service(self.namespace, service)  # type: ignore[arg-type]  # a dict is sent as is
            custom.create_namespaced_custom_object(
                tool.group, tool.version, self.namespace, tool.plural, tool.manifest(i, "1.0.0")
            )

        list(self.pool.map(apply, range(count)))

    def wait_for(
        self, done: Callable[[dict[str, Any]], bool], names: set[str], started: float
    ) -> tuple[float | None, int]:
        """Poll until every object in `names` is `done`: (seconds since `started`, or None on
        timeout; how many were done at the end)."""
        self.milestones = {}
        marks = {"first": 1, "half": (len(names) + 1) // 2, "90%": (9 * len(names) + 9) // 10}
        while True:
            t0 = time.monotonic()
            items = list_objects(self.cluster, self.tool, self.namespace)
            count = sum(1 for o in items if o["metadata"]["name"] in names and done(o))
            now = time.monotonic()
            for mark, needed in marks.items():
                if count >= needed:
                    self.milestones.setdefault(mark, round(now - started, 1))
            if count == len(names):
                return now - started, count
            if now - started > self.timeout:
                return None, count
            # Poll at most every second, and spend at most a third of the time listing.
            time.sleep(max(1.0, 2 * (now - t0)))

    def roll(self, indices: list[int], version: str) -> tuple[float | None, int]:
        """Start a rollout to `version` on these objects at once; wait until all promoted."""
        custom, tool = self.cluster.custom, self.tool
        started = time.monotonic()
        list(
            self.pool.map(
                lambda i: custom.patch_namespaced_custom_object(
                    tool.group,
                    tool.version,
                    self.namespace,
                    tool.plural,
                    name_of(i),
                    tool.patch(i, version),
                ),
                indices,
            )
        )
        return self.wait_for(
            lambda o: tool.promoted(o, version), {name_of(i) for i in indices}, started
        )

    def delete(self, timeout: float) -> None:
        """Delete the namespace and wait until it is gone (the controller still runs: it may
        hold finalizers), so that the next tool finds the cluster as this one did."""
        t0 = time.monotonic()
        self.cluster.core.delete_namespace(self.namespace, propagation_policy="Background")
        while time.monotonic() - t0 < timeout:
            try:
                self.cluster.core.read_namespace(self.namespace)
            except client.ApiException as e:
                if e.status == 404:
                    break
                raise
            time.sleep(2)
        else:
            print(f"[{self.tool.name}] {self.namespace} still terminating", file=sys.stderr)
        took = time.monotonic() - t0
        print(f"[{self.tool.name}] namespace deleted in {took:.0f} s", file=sys.stderr)


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure(
    cluster: Cluster, tool: Tool, args: argparse.Namespace, log_dir: Path, cleanup: bool
) -> dict[str, Any]:
    namespace = f"bench-{tool.name}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    n = args.count
    result: dict[str, Any] = {"tool": tool.name, "count": n, "namespace": namespace}
    with ThreadPoolExecutor(16) as pool:
        run = Run(cluster, tool, namespace, pool, args.timeout)
        controller, pid = tool.start(cluster, namespace, log_dir, args.workers)
        try:
            time.sleep(2)
            queue_before = queue_snapshot(controller)
            result["start_rss_mib"] = round(rss_mib(pid), 1)
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            run.create(n)
            result["created_in_s"] = round(time.monotonic() - started, 1)
            all_ready, ready = run.wait_for(tool.ready, {name_of(i) for i in range(n)}, started)
            result["burst_cpu_s"] = round(cpu_seconds(pid) - cpu_before, 1)
            result["ready"] = ready
            result["all_ready_s"] = rounded(all_ready)
            result["ready_milestones_s"] = run.milestones
            result["half_ready_s"] = run.milestones.get("half")
            result["peak_rss_mib"] = round(peak_rss_mib(pid), 1)
            result["burst_queue_wait"] = queue_wait(queue_before, queue_snapshot(controller))
            print(f"[{tool.name}] {ready}/{n} ready: {result}", file=sys.stderr, flush=True)
            if all_ready is None:
                return result
            time.sleep(5)  # let the last watch events settle
            idle_before = cpu_seconds(pid)
            time.sleep(args.idle_seconds)
            idle = cpu_seconds(pid) - idle_before
            result["idle_cpu_percent"] = round(100 * idle / args.idle_seconds, 3)
            print(f"[{tool.name}] idle: {result['idle_cpu_percent']}%", file=sys.stderr)

            one_s, _ = run.roll([0], "2.0.0")
            result["one_rollout_s"] = rounded(one_s)
            many = list(range(1, min(args.rollouts, n - 1) + 1))
            queue_before = queue_snapshot(controller)
            many_s, promoted = run.roll(many, "2.0.0")
            result["rollouts_queue_wait"] = queue_wait(queue_before, queue_snapshot(controller))
            result["concurrent_rollouts"] = len(many)
            result["concurrent_promoted"] = promoted
            result["concurrent_rollouts_s"] = rounded(many_s)
            result["peak_rss_mib"] = round(peak_rss_mib(pid), 1)
            result["total_cpu_s"] = round(cpu_seconds(pid) - cpu_before, 1)
            print(f"[{tool.name}] rollouts: {result}", file=sys.stderr, flush=True)
            return result
        finally:
            if cleanup:
                run.delete(args.cleanup_timeout)
            controller.stop()


# --- the report -----------------------------------------------------------------------------


def fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}{unit}" if value < 10 else f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def ratio(a: object, b: object) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return f"{a / b:.2f}x"
    return "-"


ROWS = [
    ("half Ready (s)", "half_ready_s"),
    ("all Ready (s)", "all_ready_s"),
    ("Ready at the end", "ready"),
    ("CPU-seconds during the burst", "burst_cpu_s"),
    ("RSS at start, no object (MiB)", "start_rss_mib"),
    ("peak RSS (MiB)", "peak_rss_mib"),
    ("idle CPU (% of a core)", "idle_cpu_percent"),
    ("1 rollout (s)", "one_rollout_s"),
    ("concurrent rollouts (s)", "concurrent_rollouts_s"),
    ("work-queue wait, burst", "burst_queue_wait"),
    ("work-queue wait, concurrent rollouts", "rollouts_queue_wait"),
]


def report(results: dict[str, dict[str, Any]], n: int) -> str:
    names = list(results)
    lines = [
        f"N = {n:,}",
        "| | " + " | ".join(names) + " | ratio |",
        "|---" * (len(names) + 2) + "|",
    ]
    for label, key in ROWS:
        values = [results[t].get(key) for t in names]
        r = ratio(values[0], values[1]) if len(values) == 2 else "-"
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {r} |")
    for t, res in results.items():
        one, many = res.get("one_rollout_s"), res.get("concurrent_rollouts_s")
        if isinstance(one, float) and isinstance(many, float):
            lines.append(
                f"{t}: {res['concurrent_rollouts']} rollouts at once = {many / one:.2f}x one"
            )
    c, a = results.get("canarium"), results.get("argo-rollouts")
    if c:
        goals = []
        if n == 1000:
            goals.append(f"1,000 all Ready < 60 s: {fmt(c.get('all_ready_s'), ' s')}")
        if a:
            goals.append(
                "peak RSS <= 1/2 of Argo Rollouts': "
                + ratio(c.get("peak_rss_mib"), a.get("peak_rss_mib"))
            )
        goals.append(f"idle CPU < 1%: {fmt(c.get('idle_cpu_percent'), '%')}")
        one, many = c.get("one_rollout_s"), c.get("concurrent_rollouts_s")
        if "concurrent_rollouts" in c:
            at_once = c["concurrent_rollouts"]
            goals.append(f"{at_once} at once within 1.5x of one: {ratio(many, one)}")
        lines.append("Canarium's goals: " + "; ".join(goals))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--tools", default="canarium,argo-rollouts", help="comma-separated")
    parser.add_argument("--rollouts", type=int, default=100, help="rollouts started at once")
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="each tool's reconcile workers / threads"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="per wait, in seconds")
    parser.add_argument("--cleanup-timeout", type=float, default=600.0)
    parser.add_argument("--cluster-name", default="canarium-bench")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--keep-objects", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tools = [TOOLS[t] for t in args.tools.split(",")]
    if args.cluster_name == "canarium":
        parser.error("the benchmark needs a cluster of its own")

    # The bench profile of the control plane (hack/cluster.sh), for this cluster only.
    os.environ["CANARIUM_CONTROL_PLANE_PROFILE"] = "bench"
    if any(t.name == "argo-rollouts" for t in tools):
        argo.binary()  # build it (first run only) before the cluster starts
    kubeconfig, kubectl = start_local_cluster(args.cluster_name)
    cluster = Cluster(kubeconfig, kubectl, local=True)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    results: dict[str, dict[str, Any]] = {}
    try:
        apply_crds(cluster)
        if any(t.name == "argo-rollouts" for t in tools):
            argo.apply_crds(cluster)
        for k, tool in enumerate(tools):
            # The last tool's objects go with the cluster.
            last = k == len(tools) - 1 and not args.keep_cluster
            cleanup = not args.keep_objects and not last
            results[tool.name] = measure(cluster, tool, args, log_dir, cleanup)
    finally:
        if not args.keep_cluster:
            stop_local_cluster(args.cluster_name)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(report(results, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
