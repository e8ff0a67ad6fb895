"""Argo Rollouts for tests/bench/bench_operator.py: its controller (built from its Go module by
hack/argo-rollouts.sh) as a local process on the benchmark's cluster, and the Rollouts the
benchmark creates (the same workload as a ModelDeployment: one replica, canary steps, a stable
and a canary Service, no traffic router).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests import process
from tests.e2e.cluster import REPO, Cluster, wait_until

SCRIPT = REPO / "hack" / "argo-rollouts.sh"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
IMAGE = "canarium-serving:e2e"  # never pulled: kwok simulates the pods


def binary() -> Path:
    """The controller's binary (hack/argo-rollouts.sh builds it on the first run)."""
    out = subprocess.run([str(SCRIPT)], check=True, capture_output=True, text=True, timeout=1800)
    return Path(out.stdout.strip())


def apply_crds(cluster: Cluster) -> None:
    crds = subprocess.run(
        [str(SCRIPT), "crds"], check=True, capture_output=True, text=True, timeout=1800
    ).stdout.strip()
    files = sorted(p for p in Path(crds).glob("*-crd.yaml"))
    for crd in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    wait_until(
        lambda: cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=10s", "crd/rollouts.argoproj.io",
            check=False,
        ).returncode
        == 0,
        timeout=60,
        interval=1,
        what="the Rollout CRD established",
    )  # fmt: skip


def service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def services(name: str) -> list[dict[str, Any]]:
    """The Services a canary Rollout names (the controller adds the pod-template-hash to their
    selectors); a ModelDeployment's operator creates its own."""
    return [service(f"{name}-stable", name), service(f"{name}-canary", name)]


def rollout(name: str, version: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(version)]},
            },
            "strategy": {
                "canary": {
                    "stableService": f"{name}-stable",
                    "canaryService": f"{name}-canary",
                    "steps": steps,
                }
            },
        },
    }


def container(version: str) -> dict[str, Any]:
    return {
        "name": "server",
        "image": IMAGE,
        "env": [{"name": "MODEL_VERSION", "value": version}],
        "ports": [{"name": "http", "containerPort": 8080}],
    }


def new_version_patch(version: str) -> dict[str, Any]:
    """A merge patch that starts a rollout: the pod template changes."""
    return {"spec": {"template": {"spec": {"containers": [container(version)]}}}}


def _observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return str(status.get("observedGeneration")) == str(obj["metadata"]["generation"])


def healthy(obj: dict[str, Any]) -> bool:
    """Healthy (its phase, the one `kubectl argo rollouts get` shows) for its current spec."""
    status = obj.get("status") or {}
    return _observed(obj) and status.get("phase") == "Healthy"


def promoted(obj: dict[str, Any], version: str) -> bool:
    """The pod template with `version` is the stable one, and the Rollout Healthy."""
    status = obj.get("status") or {}
    env = obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return (
        healthy(obj)
        and env == [{"name": "MODEL_VERSION", "value": version}]
        and bool(status.get("stableRS"))
        and status.get("stableRS") == status.get("currentPodHash")
    )


class ArgoRolloutsProcess:
    """rollouts-controller watching one namespace (--namespaced), no leader election, its
    metrics and healthz servers on free ports of 127.0.0.1 (hack/argo-rollouts.sh builds it so).
    Its client's rate limit (40 QPS, burst 80 by default) is raised to what the control plane's
    own components get here (5000, 10000: kwokctl's disableQPSLimits), as the operator has none;
    `extra` sets the rest (the benchmark: --rollout-threads, as many as the operator's workers)."""

    def __init__(self, cluster: Cluster, namespace: str, log_dir: Path, *extra: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_dir / f"argo-rollouts-{namespace}.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ArgoRolloutsProcess:
        healthz = process.free_port()
        self.proc = process.start(
            [
                str(binary()),
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--namespaced",
                "--namespace",
                self.namespace,
                "--leader-elect=false",
                "--qps",
                "5000",
                "--burst",
                "10000",
                "--metricsPort",
                str(process.free_port()),
                "--healthzPort",
                str(healthz),
                *self.extra,
            ],
            log_path=self.log_path,
        )
        process.wait_ready(
            self.proc,
            "rollouts-controller",
            self.log_path,
            url=f"http://127.0.0.1:{healthz}/healthz",
            timeout=60,
        )
        return self

    def stop(self) -> None:
        process.stop(self.proc, grace=15)

    def log(self) -> str:
        return process.read_log(self.log_path)
