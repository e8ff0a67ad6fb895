"""The operator as users run it: `kubectl apply -k manifests/install`, unchanged, so its image
runs in a pod on the real node under its ServiceAccount, in the Pod Security `restricted`
namespace canarium-system. One install serves the whole e2e session (it watches every
namespace); restarts kill its pod as a crash or an eviction would."""

from __future__ import annotations

import json

from tests.e2e.cluster import REPO, Cluster, wait_until

INSTALL = REPO / "manifests" / "install"
NAMESPACE = "canarium-system"
DEPLOYMENT = "canarium-operator"
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

    def pod(self) -> str:
        """The name of the running operator pod (not terminating)."""
        pods = self.cluster.get_json("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1, [p["metadata"]["name"] for p in live]
        name: str = live[0]["metadata"]["name"]
        return name

    def wait_ready(self, timeout: float = 180) -> None:
        self.cluster.kubectl(
            "rollout", "status", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", f"--timeout={timeout}s",
            timeout=timeout + 10,
        )  # fmt: skip

        def started() -> bool:
            return "controller started" in self.log()

        wait_until(started, timeout=60, what="the operator's controller started")

    def log(self) -> str:
        """The log of the current pod (all of it)."""
        proc = self.cluster.kubectl(
            "logs", "-n", NAMESPACE, self.pod(), "--tail=-1", check=False, timeout=30
        )
        return proc.stdout if proc.returncode == 0 else ""

    def all_logs(self) -> str:
        return "\n".join([*self._logs, self.log()])

    def restart(self) -> None:
        """The pod killed at once (SIGKILL, no grace), as a crash or a lost node would; its
        Deployment starts another, which is waited for."""
        old = self.pod()
        self._logs.append(self.log())
        self.cluster.kubectl(
            "delete", "pod", "-n", NAMESPACE, old, "--grace-period=0", "--force", "--wait=true"
        )
        wait_until(lambda: self._other_pod(old), timeout=60, what="a new operator pod")
        self.wait_ready()

    def stop(self) -> None:
        """No operator at all: the Deployment scaled to zero, its pod killed (SIGKILL)."""
        old = self.pod()
        self._logs.append(self.log())
        self.cluster.kubectl("scale", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", "--replicas=0")
        self.cluster.kubectl(
            "delete", "pod", "-n", NAMESPACE, old, "--grace-period=0", "--force", "--wait=true"
        )

    def start(self) -> None:
        self.cluster.kubectl("scale", "-n", NAMESPACE, f"deploy/{DEPLOYMENT}", "--replicas=1")
        self.wait_ready()

    def _other_pod(self, old: str) -> bool:
        try:
            return self.pod() != old
        except AssertionError:
            return False

    def metrics_url(self) -> str:
        """The operator's /metrics at its pod IP (reachable from this machine)."""
        pod = self.cluster.get_json("pod", "-n", NAMESPACE, self.pod())
        return f"http://{pod['status']['podIP']}:8080/metrics"
