"""`kubectl canarium` as users call it (issue 11): through kubectl's plugin mechanism, with
-n/--kubeconfig/--context anywhere on the line, `list -A` as a `kubectl get` table,
`status -o json|yaml` equal to the object's status, and one-line errors with the documented
exit codes. The ModelDeployments run on kwok's simulated nodes (only the API server and the
in-cluster operator matter here). Last, the plugin from a plain `pip install` of the wheel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import REPO, Cluster
from tests.e2e.incluster import InstalledOperator
from tests.e2e.test_operator import iris, mdep, wait_healthy_with, wait_quiet

VENV_BIN = Path(sys.executable).parent
CONTEXT = "canarium-e2e-cli"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def kubeconfigs(cluster: Cluster, tmp_path: Path) -> tuple[Path, Path]:
    """(two contexts, the current one pointing at a closed port and CONTEXT at the cluster;
    only a context pointing at the closed port)."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    real = config["contexts"][0]["context"]
    cluster_entry = config["clusters"][0]
    dead = {"name": "dead", "cluster": {**cluster_entry["cluster"]}}
    dead["cluster"]["server"] = f"https://127.0.0.1:{closed_port()}"
    config["clusters"].append(dead)
    config["contexts"] = [
        {"name": CONTEXT, "context": {**real}},
        {"name": "dead", "context": {**real, "cluster": "dead"}},
    ]
    config["current-context"] = "dead"
    both = tmp_path / "both.kubeconfig"
    both.write_text(yaml.safe_dump(config))
    config["contexts"] = config["contexts"][1:]
    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    return both, unreachable


def kubectl_canarium(
    cluster: Cluster, *args: str, kubeconfig: Path | None = None, path: Path = VENV_BIN
) -> subprocess.CompletedProcess[str]:
    """`kubectl canarium ARGS`: kubectl finds the plugin `kubectl-canarium` on PATH and hands
    it the arguments and the environment (KUBECONFIG)."""
    env = {**os.environ, "PATH": f"{path}:{os.environ.get('PATH', '')}"}
    env["KUBECONFIG"] = str(kubeconfig or cluster.kubeconfig)
    return subprocess.run(
        [cluster.kubectl_bin, "canarium", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def second_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"cli-second-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def two_deployments(
    cluster: Cluster, namespace: str, second_namespace: str, operator: InstalledOperator
) -> tuple[str, str]:
    """iris 1.0.0 in the test's namespace and 2.0.0 in a second one, both Healthy, on kwok."""
    cluster.apply(iris("1.0.0", replicas=2), namespace)
    cluster.apply(iris("2.0.0", replicas=1), second_namespace)
    wait_healthy_with(cluster, namespace, "1.0.0")
    wait_healthy_with(cluster, second_namespace, "2.0.0")
    return namespace, second_namespace


def test_status_output_is_the_object_status_with_options_anywhere(
    cluster: Cluster, two_deployments: tuple[str, str], kubeconfigs: tuple[Path, Path]
) -> None:
    namespace, _ = two_deployments
    obj = wait_quiet(cluster, namespace)
    # The acceptance line: `kubectl canarium -n NS status NAME -o json`.
    proc = kubectl_canarium(cluster, "-n", namespace, "status", "iris", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == obj["status"]
    assert obj["status"]["phase"] == "Healthy"
    # YAML, the namespace after the verb, the kubeconfig and context named on the line while
    # KUBECONFIG's current context points at a closed port.
    both, _ = kubeconfigs
    proc = kubectl_canarium(
        cluster,
        "status",
        "iris",
        "--kubeconfig",
        str(both),
        "-o",
        "yaml",
        "--context",
        CONTEXT,
        "--namespace",
        namespace,
        kubeconfig=kubeconfigs[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == mdep(cluster, namespace)["status"]
    # The text view, as before.
    proc = kubectl_canarium(cluster, "status", "iris", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    assert f"Name:       iris (namespace {namespace})" in proc.stdout
    assert "Phase:      Healthy" in proc.stdout


def test_kubectl_completes_names_from_the_cluster(
    cluster: Cluster, two_deployments: tuple[str, str]
) -> None:
    """kubectl's own completion (`kubectl __complete`, what its shell scripts call) runs
    kubectl_complete-canarium: commands, then the namespace's ModelDeployments."""
    namespace, _ = two_deployments

    def complete(*words: str) -> list[str]:
        proc = subprocess.run(
            [cluster.kubectl_bin, "__complete", "canarium", *words],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
                 "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
            timeout=60,
            check=True,
        )  # fmt: skip
        return proc.stdout.splitlines()

    assert complete("st") == ["status", ":4"]
    assert complete("-n", namespace, "status", "") == ["iris", ":4"]
    assert namespace in complete("list", "-n", "")


def test_list_all_namespaces_through_a_named_context(
    cluster: Cluster, two_deployments: tuple[str, str], kubeconfigs: tuple[Path, Path]
) -> None:
    first, second = two_deployments
    both, _ = kubeconfigs
    # The acceptance line: `kubectl canarium --context C list -A` (KUBECONFIG's current
    # context is the dead one: only --context reaches the cluster).
    proc = kubectl_canarium(cluster, "--context", CONTEXT, "list", "-A", kubeconfig=both)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "READY", "STABLE", "CANARY", "WEIGHT", "STEP", "AGE",
    ]  # fmt: skip
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert rows[(first, "iris")][2:8] == ["Healthy", "2/2", "1.0.0", "-", "-", "-"]
    assert rows[(second, "iris")][2:8] == ["Healthy", "1/1", "2.0.0", "-", "-", "-"]
    # Columns line up under their headers, as kubectl's do.
    start = lines[0].index("PHASE")
    assert all(line[start:].startswith("Healthy") for line in lines[1:] if first in line)
    # One namespace: no NAMESPACE column, that namespace's object only.
    proc = kubectl_canarium(cluster, "list", "-n", second, "--context", CONTEXT, kubeconfig=both)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:5] for line in proc.stdout.splitlines()] == [
        ["NAME", "PHASE", "READY", "STABLE", "CANARY"],
        ["iris", "Healthy", "1/1", "2.0.0", "-"],
    ]
    proc = kubectl_canarium(cluster, "list", "-A", "-o", "json")
    names = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in json.loads(proc.stdout)["items"]
    }
    assert {(first, "iris"), (second, "iris")} <= names


def test_a_missing_object_is_one_line_and_exit_1(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    for args in (["status", "nope"], ["status", "nope", "-o", "json"], ["abort", "nope"]):
        proc = kubectl_canarium(cluster, "-n", namespace, *args)
        assert (proc.returncode, proc.stdout) == (1, ""), proc
        assert (
            proc.stderr == f'error: modeldeployment "nope" not found in namespace "{namespace}"\n'
        )
    proc = kubectl_canarium(cluster, "-n", namespace, "list")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == f"No resources found in {namespace} namespace.\n"


def test_an_unreachable_server_is_one_line_and_exit_1(
    cluster: Cluster, kubeconfigs: tuple[Path, Path]
) -> None:
    _, unreachable = kubeconfigs
    for args in (["list", "-A"], ["status", "iris", "-o", "json"], ["promote", "iris"]):
        proc = kubectl_canarium(cluster, *args, kubeconfig=unreachable)
        assert (proc.returncode, proc.stdout) == (1, ""), proc
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(
            "error: cannot reach the Kubernetes API server at https://127.0.0.1:"
        )
        assert "Traceback" not in proc.stderr
    proc = kubectl_canarium(cluster, "status", "--bogus", "iris")
    assert proc.returncode == 2, proc


def test_the_plugin_works_from_a_plain_install(
    cluster: Cluster, two_deployments: tuple[str, str], tmp_path: Path
) -> None:
    """`pip install canarium` without extras: the wheel into a fresh venv, then `kubectl
    canarium --help` and `list -A` from that venv's bin only."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("canarium-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    proc = kubectl_canarium(cluster, "--help", path=venv / "bin")
    assert proc.returncode == 0, proc.stderr
    assert "exit codes:" in proc.stdout
    proc = kubectl_canarium(cluster, "list", "-A", path=venv / "bin")
    assert proc.returncode == 0, proc.stderr
    first, second = two_deployments
    assert {tuple(line.split()[:2]) for line in proc.stdout.splitlines()[1:]} >= {
        (first, "iris"),
        (second, "iris"),
    }
    # The operator is not there, and says so in one line.
    run = subprocess.run(
        [str(venv / "bin" / "canarium"), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stderr) == (
        1,
        "error: `canarium run` needs the operator extra (no module 'kopf'): "
        "pip install 'canarium[operator]'\n",
    )
    # Nothing of the extras came along: the plugin needs none of them.
    freeze = subprocess.run(
        [str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for extra in ("kopf", "onnxruntime", "uvicorn", "numpy"):
        assert f"{extra}==" not in freeze, freeze
