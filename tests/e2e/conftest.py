from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.cluster import (
    Cluster,
    local_cluster_running,
    start_local_cluster,
    stop_local_cluster,
)
from tests.e2e.operator import OperatorProcess, apply_crds


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


@pytest.fixture
def operator(
    cluster: Cluster, crds: None, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a real process (`canarium run`) watching the test's namespace."""
    proc = OperatorProcess(cluster, namespace, tmp_path_factory.mktemp("operator")).start()
    yield proc
    proc.stop()
    log = proc.log()
    assert "Traceback" not in log, f"the operator logged a traceback:\n{log[-5000:]}"
