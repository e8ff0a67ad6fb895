"""The operator as users run it: `kubectl apply -k manifests/install`, unchanged, so its image
runs in a pod on the real node under its ServiceAccount, in the Pod Security `restricted`
namespace canarium-system. One install serves the whole e2e session (it watches every
namespace); it runs two replicas, the holder of the Lease reconciling; restarts kill the
leader's pod as a crash or an eviction would."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.cluster import REPO, Cluster, wait_until

INSTALL = REPO / "manifests" / "install"
NAMESPACE = "canarium-system"
DEPLOYMENT = "canarium-operator"
LEASE = "canarium-operator"  # the leader Lease of its replicas
REPLICAS = 2
SELECTOR = "app.kubernetes.io/name=canarium-operator"
CLUSTER_OBJECTS = (("clusterrolebinding", "canarium"), ("clusterrole", "canarium"))


class InstalledOperator:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.preexisting = False
        self._logs: list[str] = []  # logs of the pods this run killed

    def install(self) -> InstalledOperator:
        existing = self.cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json", check=False)
        self.preexisting = (
            existing.returncode == 0
            and json.loads(existing.stdout).get("status", {}).get("phase") == "Active"
        )
        if not self.preexisting:  # a previous run's namespace may still be terminating
            wait_until(
                lambda: (
                    self.cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
                ),
                timeout=120,
                what=f"namespace {NAMESPACE} gone",
            )
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(INSTALL))
        self.wait_ready()
        return self

    def uninstall(self) -> None:
        if self.preexisting:
            return
        self.cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        for kind, name in CLUSTER_OBJECTS:
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found")

    # --- the replicas: one leader (the Lease's holder), one standby ------------------------
    def pods(self) -> list[str]:
        """The names of the operator's live pods (not terminating)."""
        pods = self.cluster.get_json("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
        return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]

    def lease(self) -> dict[str, Any]:
        spec: dict[str, Any] = (
            self.cluster.get_json("lease", "-n", NAMESPACE, LEASE).get("spec") or {}
        )
        return spec

    def holder(self) -> str | None:
        """The pod the Lease names (its holderIdentity is `<pod>_<uuid>`), if any."""
        proc = self.cluster.kubectl(
            "get", "lease", "-n", NAMESPACE, LEASE, "-o", "jsonpath={.spec.holderIdentity}",
            check=False,
        )  # fmt: skip
        holder = proc.stdout.strip() if proc.returncode == 0 else ""
        return holder.rsplit("_", 1)[0] if holder else None

    def pod(self) -> str:
        """The leader's pod: the live pod that holds the Lease."""

        def leader() -> str | None:
            holder = self.holder()
            return holder if holder in self.pods() else None

        name: str = wait_until(leader, timeout=60, what="a live operator pod holding the Lease")
        return name

    def wait_ready(self, timeout: float = 180) -> None:
        self.cluster.kubectl(
            "rollout", "status", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", f"--timeout={timeout}s",
            timeout=timeout + 10,
        )  # fmt: skip

        def started() -> bool:
            return "controller started" in self.log()

        wait_until(started, timeout=60, what="the leader's controller started")

    def log(self, pod: str | None = None) -> str:
        """The log of the leader's pod, or of `pod` (all of it)."""
        proc = self.cluster.kubectl(
            "logs", "-n", NAMESPACE, pod or self.pod(), "--tail=-1", check=False, timeout=30
        )
        return proc.stdout if proc.returncode == 0 else ""

    def all_logs(self) -> str:
        """Every replica's log, the killed ones' included."""
        return "\n".join([*self._logs, *(self.log(pod) for pod in self.pods())])

    def restart(self) -> None:
        """The leader's pod killed at once (SIGKILL, no grace), as a crash or a lost node
        would; the standby takes over and the Deployment starts another standby."""
        old = self.pod()
        self._logs.append(self.log(old))
        self.cluster.kubectl(
            "delete", "pod", "-n", NAMESPACE, old, "--grace-period=0", "--force", "--wait=true"
        )
        wait_until(lambda: self._other_leader(old), timeout=60, what="another leader")
        self.wait_ready()

    def stop(self) -> None:
        """No operator at all: the Deployment scaled to zero, its pods killed (SIGKILL)."""
        pods = self.pods()
        self._logs.extend(self.log(pod) for pod in pods)
        self.cluster.kubectl("scale", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", "--replicas=0")
        if pods:
            self.cluster.kubectl(
                "delete", "pod", "-n", NAMESPACE, *pods, "--grace-period=0", "--force",
                "--wait=true",
            )  # fmt: skip

    def start(self) -> None:
        self.cluster.kubectl(
            "scale", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", f"--replicas={REPLICAS}"
        )
        self.wait_ready()

    def _other_leader(self, old: str) -> bool:
        holder = self.holder()
        return holder is not None and holder != old and holder in self.pods()

    def metrics_url(self) -> str:
        """The operator's /metrics at its pod IP (reachable from this machine)."""
        pod = self.cluster.get_json("pod", "-n", NAMESPACE, self.pod())
        return f"http://{pod['status']['podIP']}:8080/metrics"
