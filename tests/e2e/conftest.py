from __future__ import annotations

import os
import re
import shutil
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
)
from tests.e2e.gateway import Gateway
from tests.e2e.gomod import module_dir, versions
from tests.e2e.incluster import InstalledOperator
from tests.e2e.kstatus import KStatus
from tests.e2e.kstatus import build as build_kstatus
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, build_e2e_models
from tests.e2e.operator import apply_crds
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


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> None:
    """The test's namespace enforces Pod Security "restricted", as the serving pods must pass
    it (`pytestmark = pytest.mark.usefixtures("restricted")` in a module)."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """The Canarium CRDs from crds/, installed (server-side apply) and Established."""
    apply_crds(cluster)


@pytest.fixture(scope="session")
def installed_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InstalledOperator]:
    """manifests/install applied unchanged: the operator image in a pod under its
    ServiceAccount, watching every namespace; removed at the end unless it was there before."""
    installed = InstalledOperator(cluster)
    try:
        yield installed.install()
        logs = installed.all_logs()
        kept = tmp_path_factory.mktemp("operator") / "operator.log"
        kept.write_text(logs)
        tracebacks = traceback_blocks(logs)
        assert not tracebacks, (
            f"the operator logged {len(tracebacks)} traceback(s) (whole log: {kept}):\n"
            + "\n\n".join(tracebacks)
        )
    finally:
        installed.uninstall()


def traceback_blocks(log: str, before: int = 3) -> list[str]:
    """Each traceback in a log with the lines that led to it, up to the next log record."""
    lines = log.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        end = i + 1
        while end < len(lines) and not re.match(r"\d{4}-\d\d-\d\d |\[\d{4}-", lines[end]):
            end += 1
        blocks.append("\n".join(lines[max(0, i - before) : end]))
    return blocks


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


@pytest.fixture(scope="session")
def kstatus() -> KStatus:
    """The real kstatus (sigs.k8s.io/cli-utils, as Flux computes health), built by
    hack/kstatus.sh on first use: `kstatus.compute(obj)`."""
    try:
        return KStatus(build_kstatus())
    except RuntimeError as e:
        pytest.fail(str(e))
