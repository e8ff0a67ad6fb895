from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.cluster import (
    REPO,
    Cluster,
    local_cluster_running,
    start_local_cluster,
    stop_local_cluster,
    wait_until,
)
from tests.e2e.gomod import module_dir, versions
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, build_e2e_models
from tests.e2e.operator import apply_crds, free_port
from tests.e2e.prometheus import Prometheus, find_prometheus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's cluster: CANARIUM_KUBECONFIG if set, else the local control plane.

    A local cluster this fixture started is stopped at the end (set CANARIUM_KEEP_CLUSTER=1 to
    keep it); one that was already running (`make cluster-up`) is left as it was.
    """
    external = os.environ.get("CANARIUM_KUBECONFIG")
    if external:
        kubectl = os.environ.get("CANARIUM_KUBECTL") or shutil.which("kubectl") or "kubectl"
        yield Cluster(Path(external), kubectl, local=False)
        return
    already = local_cluster_running()
    kubeconfig, kubectl = start_local_cluster()
    yield Cluster(kubeconfig, kubectl, local=True)
    if not already and not os.environ.get("CANARIUM_KEEP_CLUSTER"):
        stop_local_cluster()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """The Canarium CRDs from crds/, installed (server-side apply) and Established."""
    apply_crds(cluster)


@pytest.fixture(scope="session")
def installed_operator(cluster: Cluster) -> Iterator[InstalledOperator]:
    """manifests/install applied unchanged: the operator image in a pod under its
    ServiceAccount, watching every namespace; removed at the end unless it was there before."""
    installed = InstalledOperator(cluster)
    try:
        yield installed.install()
        logs = installed.all_logs()
        assert "Traceback" not in logs, f"the operator logged a traceback:\n{logs[-5000:]}"
    finally:
        installed.uninstall()


@pytest.fixture
def operator(installed_operator: InstalledOperator, namespace: str) -> InstalledOperator:
    """The in-cluster operator, for a test in a fresh namespace."""
    return installed_operator


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> E2EModels:
    """good_v1, good_v2, drifted and broken iris models (tests/e2e/models.py), packaged in a
    tmp folder: `.uri` (file:///...) and `.sha256` go into spec.model."""
    return build_e2e_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def load(cluster: Cluster, namespace: str) -> Iterator[Callable[..., LoadGenerator]]:
    """A factory of LoadGenerators for the test's namespace: load(name, data, **options)
    (not started); every one is stopped at the end of the test."""
    made: list[LoadGenerator] = []

    def make(name: str, data: Any, **options: Any) -> LoadGenerator:
        generator = LoadGenerator(cluster, namespace, name, data, **options)
        made.append(generator)
        return generator

    yield make
    for generator in made:
        generator.stop()


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus for the session (pods discovered through the cluster's kubeconfig,
    1 s scrapes), listening where the in-cluster operator reaches it (the real node's address);
    `prometheus.watch(namespace)` makes it scrape a test's serving pods."""
    if find_prometheus() is None:
        pytest.fail("prometheus is not installed: run `make test-deps` (Debian package prometheus)")
    prom = Prometheus(
        cluster.kubeconfig, tmp_path_factory.mktemp("prometheus"), host=cluster.host_address()
    ).start()
    yield prom
    prom.stop()


@pytest.fixture(scope="session")
def gateway_api_crds(cluster: Cluster) -> None:
    """The Gateway API standard-channel CRDs: the cluster's own if it has HTTPRoute, else the
    pinned release's (GATEWAY_API_VERSION, from the Go module proxy). They stay installed
    (removing them would delete the HTTPRoutes of anyone else using the cluster)."""
    present = cluster.kubectl("get", "crd", "httproutes.gateway.networking.k8s.io", check=False)
    if present.returncode == 0:
        return
    version = versions()["GATEWAY_API_VERSION"]
    try:
        root = module_dir(f"sigs.k8s.io/gateway-api@{version}")
    except RuntimeError as e:
        pytest.skip(f"no Gateway API CRDs in the cluster and none to install: {e}")
    # The CRDs only: the channel's ValidatingAdmissionPolicy (vap_safeupgrades) would refuse a
    # later install of other Gateway API versions or channels on this cluster.
    plurals = [
        f.stem.split("_", 1)[1]
        for f in sorted((root / "config" / "crd" / "standard").glob("gateway.networking.k8s.io_*"))
        if not f.stem.endswith("_vap_safeupgrades")
    ]
    crd_dir = root / "config" / "crd" / "standard"
    files = [str(crd_dir / f"gateway.networking.k8s.io_{p}.yaml") for p in plurals]
    cluster.kubectl("apply", "--server-side", *(a for f in files for a in ("-f", f)))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{p}.gateway.networking.k8s.io" for p in plurals),
    )


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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.cluster.kubectl(
            "delete", "gatewayclass", self.class_name, "--ignore-not-found", "--wait=false",
            check=False,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def gateway(
    cluster: Cluster, gateway_api_crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Traefik, a real Gateway API implementation (see Gateway), for the session; stopped at
    the end. Built by hack/gateway.sh (`make test-deps`) if it is not built yet."""
    script = str(REPO / "hack" / "gateway.sh")
    build = subprocess.run([script], capture_output=True, text=True, timeout=3600, check=False)
    if build.returncode != 0:
        pytest.fail(f"hack/gateway.sh failed ({build.returncode}):\n{build.stderr[-3000:]}")
    gw = Gateway(cluster, build.stdout.strip().splitlines()[-1], tmp_path_factory.mktemp("gateway"))
    try:
        yield gw.start()
    finally:
        gw.stop()
