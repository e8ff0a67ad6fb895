"""The e2e harness itself, with the installed operator and no rollout policy: real serving pods
on the real node, traffic through a Service's ClusterIP or routed as an HTTPRoute would
(LoadGenerator), and a real Prometheus that finds the pods through the API server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, in_configmap, model_deployment
from tests.e2e.prometheus import Prometheus
from tests.serving import v2_clients

pytestmark = pytest.mark.usefixtures("restricted")

NAME = "iris"


def _wait_ready(cluster: Cluster, namespace: str, name: str = NAME) -> None:
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=120s",
        timeout=130,
    )  # fmt: skip


def _ready_endpoints(cluster: Cluster, namespace: str, service: str = NAME) -> int:
    slices = cluster.get_json(
        "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return sum(
        1
        for es in slices
        for ep in es.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready", True)
    )


def _pod_ips(cluster: Cluster, namespace: str) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"canarium.dev/deployment={NAME}"
    ).items
    return {p.metadata.name: p.status.pod_ip for p in pods if p.status.pod_ip}


def test_serving_pods_traffic_and_prometheus(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    prometheus: Prometheus,
) -> None:
    prometheus.watch(namespace)
    model = in_configmap(cluster, namespace, models.good_v1)
    cluster.apply(model_deployment(NAME, model, replicas=3), namespace)
    _wait_ready(cluster, namespace)

    # Three real pods with their own IPs, running the operator's pod template.
    ips = _pod_ips(cluster, namespace)
    assert len(set(ips.values())) == 3
    pod = cluster.core.read_namespaced_pod(next(iter(ips)), namespace)
    template_env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert template_env["CANARIUM_MODEL_URI"] == model.uri
    assert pod.status.container_statuses[0].ready

    # 100 requests to the entry Service's ClusterIP: kube-proxy spreads them over the pods,
    # once it knows all three (its rules follow the EndpointSlices within its 1 s
    # minSyncPeriod; until then it sends everything to the pods it knows).
    wait_until(
        lambda: _ready_endpoints(cluster, namespace) == 3,
        timeout=30,
        what="3 ready endpoints in the Service's EndpointSlices",
    )
    time.sleep(2)
    gen = load(NAME, models.x, rate=60, max_requests=100, max_rows=3).run()
    results = gen.results
    assert len(results) == 100
    assert gen.statuses() == {200: 100}, gen.counts()
    for r in results:
        assert r.labels == tuple(models.good_v1.predict(models.x[list(r.rows)])), r
        assert r.version == "1.0.0"

    # Prometheus found the three pods through the API server and counted every request.
    def scraped() -> float | None:
        healthy = [t for t in prometheus.targets(namespace) if t["health"] == "up"]
        total = prometheus.value(f'sum(canarium_requests_total{{namespace="{namespace}"}})')
        return total if len(healthy) == 3 and total == 100 else None

    wait_until(scraped, timeout=30, interval=0.5, what="3 targets up and 100 requests counted")
    targets = prometheus.targets(namespace)
    assert {t["labels"]["pod"] for t in targets} == set(ips)
    assert {t["scrapeUrl"] for t in targets} == {f"http://{ip}:8080/metrics" for ip in ips.values()}
    per_pod = prometheus.query(
        f'sum by (pod) (canarium_requests_total{{namespace="{namespace}",code="200"}})'
    )
    counts = {s["metric"]["pod"]: int(float(s["value"][1])) for s in per_pod}
    assert set(counts) == set(ips), counts
    assert sum(counts.values()) == 100, counts
    assert min(counts.values()) >= 10, f"kube-proxy balances over every pod: {counts}"
    prometheus.unwatch(namespace)

    # V2 gRPC through the entry Service's grpc port (h2c, 8081) on the same pods, with the
    # clients people use, unchanged: the model's own predictions.
    service = cluster.core.read_namespaced_service(NAME, namespace)
    target = f"{service.spec.cluster_ip}:8081"
    rows = models.x[:7]
    for client in ("triton-grpc", "kserve-grpc"):
        out = v2_clients.run(client, target, NAME, rows)
        assert "error" not in out, out
        assert out["model_ready"] is True
        assert out["outputs"]["label"] == models.good_v1.predict(rows), client

    # Deleting the ModelDeployment deletes its pods: their containers stop for real.
    cluster.kubectl("delete", "mdep", NAME, "-n", namespace)
    wait_until(lambda: not _pod_ips(cluster, namespace), timeout=60, what="pods gone")


def _httproute(namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"parentRefs": [{"name": "canarium-gateway"}], "rules": rules},
    }


def test_httproute_weights_headers_and_mirrors(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    gateway_api_crds: None,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    """An HTTPRoute written by hand over the stable and canary Services (both select the one
    revision when there is no canary), so the split shows in the Service each request was
    routed to (the generator plays the Gateway, reading the real EndpointSlices)."""
    model = in_configmap(cluster, namespace, models.good_v1)
    cluster.apply(model_deployment(NAME, model, replicas=2), namespace)
    _wait_ready(cluster, namespace)
    backend = {"group": "", "kind": "Service", "port": 80}
    route = _httproute(
        namespace,
        [
            {
                "matches": [{"headers": [{"name": "X-Canarium-Canary", "value": "always"}]}],
                "backendRefs": [{**backend, "name": f"{NAME}-canary"}],
                "filters": [
                    {
                        "type": "RequestMirror",
                        "requestMirror": {"backendRef": {**backend, "name": NAME}},
                    }
                ],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {**backend, "name": f"{NAME}-stable", "weight": 80},
                    {**backend, "name": f"{NAME}-canary", "weight": 20},
                ],
            },
        ],
    )
    cluster.apply(route, namespace)
    stored = cluster.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", NAME
    )
    assert [r["weight"] for r in stored["spec"]["rules"][1]["backendRefs"]] == [80, 20]

    split = load(NAME, models.x, router="gatewayAPI", rate=150, max_requests=500)
    headered = load(
        NAME,
        models.x,
        router="gatewayAPI",
        rate=50,
        max_requests=40,
        headers={"X-Canarium-Canary": "always"},
    )
    split.start()
    headered.run()
    split.wait()

    assert split.statuses() == {200: 500}, split.counts()
    services = split.by_service()
    assert set(services) == {f"{NAME}-stable", f"{NAME}-canary"}
    assert abs(services[f"{NAME}-canary"] / 500 - 0.2) < 0.06, services
    assert len(split.by_ip()) == 2  # both pods, through either Service
    assert not split.mirrored

    assert headered.statuses() == {200: 40}
    assert headered.by_service() == {f"{NAME}-canary": 40}
    assert len(headered.mirrored) == 40
    assert {r.service for r in headered.mirrored} == {NAME}
    assert {r.status for r in headered.mirrored} == {200}


def test_drifted_and_broken_models_misbehave_as_described(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
) -> None:
    cluster.apply(
        [
            model_deployment(
                "drifted", in_configmap(cluster, namespace, models.drifted), replicas=1
            ),
            model_deployment("broken", in_configmap(cluster, namespace, models.broken), replicas=1),
        ],
        namespace,
    )
    for name in ("drifted", "broken"):
        _wait_ready(cluster, namespace, name)

    drifted = load("drifted", models.x, rate=100, max_requests=60, max_rows=4, duration=30)
    broken = load("broken", models.x, rate=100, max_requests=20, duration=30)
    drifted.start()
    broken.run()
    drifted.wait()

    assert drifted.statuses() == {200: 60}
    rows = [i for r in drifted.results for i in r.rows]
    labels = [v for r in drifted.results for v in r.labels or ()]
    assert labels == models.drifted.predict(models.x[rows])
    v1 = models.good_v1.predict(models.x[rows])
    disagree = sum(a != b for a, b in zip(labels, v1, strict=True))
    assert disagree / len(labels) > 0.2, disagree
    assert broken.statuses() == {400: 20}
    assert "shape" in broken.results[0].error

    # pause/resume: nothing is sent while paused.
    gen = load("drifted", models.x, rate=50, duration=30)
    gen.start()
    time.sleep(0.5)
    gen.pause()
    time.sleep(0.3)  # requests in flight finish
    paused_at = gen.mark()
    time.sleep(1.0)
    assert not gen.results_since(paused_at)
    gen.resume()
    time.sleep(0.5)
    gen.stop()
    assert gen.results_since(paused_at)


def test_model_on_a_persistent_volume_claim(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    load: Callable[..., LoadGenerator],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """pvc://claim/path: the operator mounts the claim read-only into the serving pods (a
    hostPath PersistentVolume on the real node here; any storage class elsewhere)."""
    if cluster.host_address() == "127.0.0.1":
        pytest.skip("needs the local cluster's real node (a hostPath PersistentVolume on it)")
    store = tmp_path_factory.mktemp("pv")
    store.chmod(0o755)
    (store / "iris").mkdir(mode=0o755)
    target = store / "iris" / "model.onnx"
    target.write_bytes(models.good_v2.path.read_bytes())
    target.chmod(0o644)
    pv = f"model-store-{namespace}"[:63]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "10Mi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(store), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "models"},
            },
        }
    )
    try:
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "models"},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "10Mi"}},
                },
            },
            namespace,
        )
        model = dataclasses.replace(models.good_v2, uri="pvc://models/iris/model.onnx")
        cluster.apply(model_deployment(NAME, model, version="2.0.0", replicas=2), namespace)
        _wait_ready(cluster, namespace)
        gen = load(NAME, models.x, rate=50, max_requests=40, max_rows=2).run()
        assert gen.statuses() == {200: 40}, gen.counts()
        for r in gen.results:
            assert r.labels == tuple(models.good_v2.predict(models.x[list(r.rows)])), r
        assert {r.version for r in gen.results} == {"2.0.0"}
    finally:
        cluster.kubectl("delete", "mdep", NAME, "-n", namespace, "--ignore-not-found")
        cluster.kubectl("delete", "pvc", "models", "-n", namespace, "--ignore-not-found")
        cluster.kubectl("delete", "pv", pv, "--ignore-not-found", "--wait=false")
