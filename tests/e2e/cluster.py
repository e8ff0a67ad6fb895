"""The cluster the e2e suite runs against, and small helpers over it.

By default the local control plane (hack/cluster.sh: real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok nodes). Point CANARIUM_KUBECONFIG at any other
cluster (kind, minikube) to run the same suite there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "hack" / "cluster.sh"

T = TypeVar("T")
REAL_NODE, REAL_NODE_IP = "canarium-worker", "198.18.0.1"  # hack/node.sh
# kwok's nodes are tainted so that only pods that ask for simulation land there.
KWOK_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def wait_until(
    fn: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> T:
    """Call fn until it returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}; last: {last!r}")


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: str
    local: bool  # the local control plane started from hack/cluster.sh
    api: client.ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self.api = config.new_client_from_config(config_file=str(self.kubeconfig))

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def apiext(self) -> client.ApiextensionsV1Api:
        return client.ApiextensionsV1Api(self.api)

    def host_address(self) -> str:
        """An address of this machine that pods reach: the real node's bridge address in the
        local cluster (hack/node.sh), else loopback (an external cluster's pods reach nothing
        here)."""
        if self.local and self.kubectl("get", "node", REAL_NODE, check=False).returncode == 0:
            return REAL_NODE_IP
        return "127.0.0.1"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def apply(
        self, manifest: str | dict[str, Any] | list[dict[str, Any]], namespace: str = ""
    ) -> str:
        text = (
            manifest
            if isinstance(manifest, str)
            else yaml.safe_dump_all(manifest if isinstance(manifest, list) else [manifest])
        )
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text).stdout

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def start_local_cluster(name: str = "", nodes: int | None = None) -> tuple[Path, str]:
    """hack/cluster.sh up; returns (kubeconfig, kubectl)."""
    env = dict(os.environ)
    if name:
        env["CANARIUM_CLUSTER_NAME"] = name
    if nodes is not None:
        env["CANARIUM_CLUSTER_NODES"] = str(nodes)
    subprocess.run([str(CLUSTER_SH), "up"], env=env, check=True, timeout=1800)
    kubeconfig = subprocess.run(
        [str(CLUSTER_SH), "kubeconfig"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    kubectl = subprocess.run(
        [str(CLUSTER_SH), "kubectl"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(kubeconfig), kubectl


def stop_local_cluster(name: str = "") -> None:
    env = dict(os.environ)
    if name:
        env["CANARIUM_CLUSTER_NAME"] = name
    subprocess.run([str(CLUSTER_SH), "down"], env=env, check=True, timeout=300)


def local_cluster_running() -> bool:
    kubeconfig = subprocess.run(
        [str(CLUSTER_SH), "kubeconfig"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not Path(kubeconfig).exists():
        return False
    kubectl = shutil.which("kubectl") or "kubectl"
    built = subprocess.run(
        [str(CLUSTER_SH), "kubectl"], capture_output=True, text=True, check=False
    )
    if built.returncode == 0 and Path(built.stdout.strip()).exists():
        kubectl = built.stdout.strip()
    probe = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "--request-timeout=5s", "get", "--raw", "/readyz"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def restart_component(component: str, down: float = 0, name: str = "") -> float:
    """hack/cluster.sh restart: one control-plane component of the local cluster stopped, kept
    down `down` seconds, started again; returns the seconds until the API server was ready."""
    env = dict(os.environ)
    if name:
        env["CANARIUM_CLUSTER_NAME"] = name
    started = time.monotonic()
    subprocess.run(
        [str(CLUSTER_SH), "restart", component, f"{down:g}"], env=env, check=True, timeout=300
    )
    return time.monotonic() - started
