"""A real Gateway API implementation for the e2e session (Traefik, built by hack/gateway.sh)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests import process
from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.operator import free_port


class Gateway:
    """A real Gateway API implementation for the session: Traefik (hack/gateway.sh,
    TRAEFIK_VERSION) as a host process, its kubernetesGateway provider reading the cluster through
    the kubeconfig and proxying to the pod IPs of the EndpointSlices, with one entry point on
    127.0.0.1:`port`. It handles only its own GatewayClass `class_name` (a label selector: other
    sessions' Traefiks leave it alone); `attach(namespace)` makes a Gateway of that class, with
    one HTTP listener on `port`, for a test's HTTPRoutes."""

    CONTROLLER = "traefik.io/gateway-controller"
    LABEL = "canarium.dev/e2e-gateway"

    def __init__(self, cluster: Cluster, binary: str, workdir: Path) -> None:
        self.cluster = cluster
        self.binary = binary
        self.session = uuid.uuid4().hex[:8]
        self.class_name = f"canarium-e2e-{self.session}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "traefik.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        env = {k: v for k, v in self.cluster.env().items() if not k.startswith("KUBERNETES_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--global.checknewversion=false",
                    "--global.sendanonymoususage=false",
                    "--log.level=INFO",
                    "--log.nocolor=true",
                    f"--entrypoints.web.address=127.0.0.1:{self.port}",
                    "--providers.providersthrottleduration=100ms",
                    "--providers.kubernetesgateway=true",
                    f"--providers.kubernetesgateway.labelselector={self.LABEL}={self.session}",
                    "--providers.kubernetesgateway.statusaddress.ip=127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.cluster.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {
                    "name": self.class_name,
                    "labels": {self.LABEL: self.session},
                },
                "spec": {"controllerName": self.CONTROLLER},
            }
        )
        self._wait_condition(["gatewayclass", self.class_name], "Accepted")
        return self

    def attach(self, namespace: str, name: str = "public") -> None:
        """A Gateway `name` in `namespace` (routes of that namespace only), Programmed."""
        self.cluster.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "gatewayClassName": self.class_name,
                    "listeners": [{"name": "web", "protocol": "HTTP", "port": self.port}],
                },
            }
        )
        self._wait_condition(["gateway", name, "-n", namespace], "Programmed")

    def _wait_condition(self, what: list[str], condition: str) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"traefik exited with {self.proc.returncode}:\n{self.log()}")
            obj = self.cluster.get_json(*what)
            return any(
                c["type"] == condition
                and c["status"] == "True"
                and c.get("observedGeneration") == obj["metadata"]["generation"]
                for c in (obj.get("status") or {}).get("conditions") or []
            )

        try:
            wait_until(ready, timeout=60, what=f"{' '.join(what)} {condition}")
        except AssertionError as e:
            raise AssertionError(f"{e}\ntraefik's log:\n{self.log()[-5000:]}") from e

    def stop(self) -> None:
        process.stop(self.proc, grace=20)
        self.cluster.kubectl(
            "delete", "gatewayclass", self.class_name, "--ignore-not-found", "--wait=false",
            check=False,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
