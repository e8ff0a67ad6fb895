"""The local cluster is a real Kubernetes: workloads on kwok's nodes and on the real node, CRDs,
garbage collection, ClusterIP Services through kube-proxy, and a lifecycle that leaves nothing
behind."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import (
    CLUSTER_SH,
    KWOK_PLACEMENT,
    REAL_NODE,
    REPO,
    Cluster,
    start_local_cluster,
    stop_local_cluster,
    wait_until,
)

NODE_SH = REPO / "hack" / "node.sh"
CACHE = Path(os.environ.get("CANARIUM_CACHE", Path.home() / ".cache" / "canarium"))
PAUSE = "registry.k8s.io/pause:3.10.1"


def deployment(name: str, replicas: int) -> dict[str, object]:
    """Pods that only need to exist: placed on kwok's simulated nodes."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "main", "image": "registry.invalid/none:1"}],
                    **KWOK_PLACEMENT,
                },
            },
        },
    }


def test_deployment_gets_ready_pods_on_kwok_nodes(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("web", 3), namespace)

    def ready() -> int | None:
        dep = cluster.apps.read_namespaced_deployment("web", namespace)
        return dep.status.ready_replicas == 3 or None

    wait_until(ready, timeout=90, what="3/3 ready replicas")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    nodes = {n.metadata.name: n for n in cluster.core.list_node().items}
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name in nodes, "scheduled by the real scheduler onto a node"
        assert pod.status.pod_ip, "kwok hands out pod IPs"
        if cluster.local:
            annotations = nodes[pod.spec.node_name].metadata.annotations or {}
            assert annotations.get("kwok.x-k8s.io/node") == "fake"
            assert pod.status.pod_ip.startswith("127.64."), (
                "pod IPs come from the loopback podCIDRs"
            )


def test_custom_resource_roundtrip(cluster: Cluster, namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.e2e.canarium.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.apply(crd)
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s"
        )
        for i in (1, 2):
            cluster.custom.create_namespaced_custom_object(
                group,
                "v1",
                namespace,
                "widgets",
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": f"w{i}"},
                    "spec": {"size": i},
                },
            )
        listed = cluster.custom.list_namespaced_custom_object(group, "v1", namespace, "widgets")
        assert sorted(o["spec"]["size"] for o in listed["items"]) == [1, 2]
        # The schema is enforced by the real API server.
        bad = cluster.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            check=False,
            input=f"apiVersion: {group}/v1\nkind: Widget\n"
            "metadata: {name: bad}\nspec: {size: 0}\n",
        )
        assert bad.returncode != 0
        assert "spec.size" in bad.stderr
        cluster.custom.delete_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        listed = cluster.custom.list_namespaced_custom_object(group, "v1", namespace, "widgets")
        assert [o["metadata"]["name"] for o in listed["items"]] == ["w2"]
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_garbage_collection_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    owner = cluster.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    cluster.core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref])),
    )
    cluster.apply(deployment("gc", 2), namespace)
    wait_until(
        lambda: (
            len(cluster.core.list_namespaced_pod(namespace, label_selector="app=gc").items) == 2
        ),
        timeout=60,
        what="2 pods",
    )

    cluster.core.delete_namespaced_config_map("owner", namespace)
    cluster.apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    def owned_gone() -> bool:
        names = {c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace).items}
        return "owned" not in names

    wait_until(owned_gone, timeout=60, what="owned ConfigMap collected")
    wait_until(
        lambda: not cluster.apps.list_namespaced_replica_set(namespace).items,
        timeout=60,
        what="ReplicaSets collected",
    )
    wait_until(
        lambda: not cluster.core.list_namespaced_pod(namespace, label_selector="app=gc").items,
        timeout=60,
        what="pods collected",
    )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _component_scripts(cluster_dir: Path) -> dict[str, str]:
    """The exec wrappers kwokctl runs for a local cluster's components (kwok.yaml names a link
    per component), by the path they resolve to, with their text; binaries are left out."""
    scripts: dict[str, str] = {}
    for doc in yaml.safe_load_all((cluster_dir / "kwok.yaml").read_text()):
        for component in (doc or {}).get("components") or []:
            program = Path(component["binary"]).resolve()
            if program.read_bytes()[:2] == b"#!":
                scripts[str(program)] = program.read_text()
    return scripts


def test_cluster_down_leaves_no_process(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip(
            "the lifecycle of the local control plane only; this run uses CANARIUM_KUBECONFIG"
        )
    name = f"canarium-lifecycle-{uuid.uuid4().hex[:4]}"
    # What `hack/cluster.sh restart` runs again for this session's cluster: another cluster's
    # up and down must leave it alone (a shared wrapper once pointed a restarted API server at
    # the other cluster's deleted certificates).
    ours = _component_scripts(cluster.kubeconfig.parent)
    assert ours
    try:
        kubeconfig, kubectl = start_local_cluster(name, nodes=1)
    except BaseException:
        stop_local_cluster(name)  # what did start must not outlive the test
        raise
    cluster_dir = str(kubeconfig.parent)
    try:
        out = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "node/kwok-node-1"
        running = _processes_mentioning(cluster_dir)
        for component in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok-controller",
        ):
            assert any(f"/{component} " in p for p in running), (
                f"{component} not running: {running}"
            )
        theirs = _component_scripts(Path(cluster_dir))
        assert theirs
        assert set(theirs).isdisjoint(ours), "each cluster runs wrappers of its own"
    finally:
        stop_local_cluster(name)
    assert _processes_mentioning(cluster_dir) == []
    assert not Path(cluster_dir).exists()
    assert not any(Path(script).exists() for script in theirs), "down removes its wrappers"
    assert _component_scripts(cluster.kubeconfig.parent) == ours


def _node_traces() -> dict[str, list[str]]:
    """Everything of the real node this machine could still hold."""
    state = str(CACHE / "node")
    procs = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state in cmdline or "canarium-worker" in cmdline or "bind=198.18.0.1" in cmdline:
            procs.append(cmdline[:160])
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if state in line.split()[1] or "/run/netns/cni-" in line.split()[1]
    ]

    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    netns, links = out("ip", "netns", "list"), out("ip", "-j", "link", "show")
    ruleset, routes = out("nft", "list", "ruleset"), out("ip", "route")
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/canarium")]
    return {
        "processes": procs,
        "mounts": mounts,
        "netns": [n.split()[0] for n in netns.splitlines() if n.startswith("cni-")],
        "links": [
            link["ifname"]
            for link in json.loads(links or "[]")
            if link["ifname"] == "canarium0" or link.get("master") == "canarium0"
        ],
        "nftables": [
            line.strip()
            for line in ruleset.splitlines()
            if "kube-proxy" in line or "KUBE-" in line or "198.1" in line
        ],
        "routes": [r for r in routes.splitlines() if "198.1" in r or "canarium0" in r],
        "cgroups": cgroups,
        "state": [state] if Path(state).exists() else [],
    }


def test_real_node_runs_containers_and_leaves_nothing_behind(
    cluster: Cluster, namespace: str
) -> None:
    """A pod runs on the real node behind a ClusterIP Service (kube-proxy programs it);
    stopping the node leaves no process, mount, network namespace, veth, bridge,
    nftables/iptables rule, route, cgroup or containerd state; starting it again brings it back
    Ready."""
    if not cluster.local:
        pytest.skip("the local cluster's real node only; this run uses CANARIUM_KUBECONFIG")
    # A pod of the pause image (made on this machine) and a Service that selects it.
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleeper", "labels": {"app": "sleeper"}},
                "spec": {"containers": [{"name": "pause", "image": PAUSE}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "sleeper"},
                "spec": {"selector": {"app": "sleeper"}, "ports": [{"port": 80}]},
            },
        ],
        namespace,
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "pod/sleeper", "--timeout=60s"
    )
    pod = cluster.core.read_namespaced_pod("sleeper", namespace)
    assert pod.spec.node_name == REAL_NODE
    assert pod.status.pod_ip.startswith("198.18.0."), pod.status.pod_ip
    during = _node_traces()
    for kind in ("processes", "mounts", "netns", "links", "nftables", "cgroups", "state"):
        assert during[kind], f"no {kind} while the node runs: the check would see nothing"

    kubeconfig = str(cluster.kubeconfig)
    binaries = subprocess.run(
        [str(CLUSTER_SH), "bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([str(NODE_SH), "down"], check=True, timeout=120)
    try:
        left = {kind: found for kind, found in _node_traces().items() if found}
        assert not left, f"left behind by node down: {left}"
    finally:
        subprocess.run([str(NODE_SH), "up", kubeconfig, binaries], check=True, timeout=300)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{REAL_NODE}", "--timeout=60s")
