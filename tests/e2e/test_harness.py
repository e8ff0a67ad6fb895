"""The e2e harness itself, with the real operator and no rollout policy: real model servers at
the simulated pods' IPs (ServingPods), traffic routed like a Service or an HTTPRoute
(LoadGenerator), and a real Prometheus that finds the pods through the API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, model_deployment
from tests.e2e.operator import OperatorProcess
from tests.e2e.pods import ServingPods
from tests.e2e.prometheus import Prometheus

NAME = "iris"


def _wait_ready(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=60s"
    )


def _pod_ips(cluster: Cluster, namespace: str) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"canarium.dev/deployment={NAME}"
    ).items
    return {p.metadata.name: p.status.pod_ip for p in pods if p.status.pod_ip}


def test_serving_pods_traffic_and_prometheus(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
    prometheus: Prometheus,
) -> None:
    prometheus.watch(namespace)
    cluster.apply(model_deployment(NAME, models.good_v1, replicas=3), namespace)
    _wait_ready(cluster, namespace)

    # One real server per pod, at the pod's IP, with the env of the operator's pod template.
    procs = serving_pods.wait_serving(count=3, timeout=30)
    ips = _pod_ips(cluster, namespace)
    assert {p.pod: p.ip for p in procs} == ips
    assert len(set(ips.values())) == 3
    pod = cluster.core.read_namespaced_pod(procs[0].pod, namespace)
    template_env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert template_env["CANARIUM_MODEL_URI"] == models.good_v1.uri
    overridden = {"CANARIUM_MODEL_CACHE_DIR"}  # an emptyDir in the pod, a folder here
    for key, value in template_env.items():
        if key not in overridden:
            assert procs[0].env[key] == value, key
    assert procs[0].env["CANARIUM_HOST"] == procs[0].ip

    # ~100 requests spread over the three endpoints of the entry Service.
    gen = load(NAME, models.x, rate=60, max_requests=100, max_rows=3).run()
    results = gen.results
    assert len(results) == 100
    assert gen.statuses() == {200: 100}, gen.counts()
    per_ip = gen.by_ip()
    assert set(per_ip) == set(ips.values()), per_ip
    assert min(per_ip.values()) >= 10, per_ip
    for r in results:
        assert r.labels == tuple(models.good_v1.predict(models.x[list(r.rows)])), r
    # Loopback pod IPs never make it into EndpointSlices (see tests/e2e/load.py).
    assert gen.routing().sources[NAME] in ("slices", "selector")
    by_pod = gen.by({ip: name for name, ip in ips.items()})
    assert sum(by_pod.values()) == 100
    assert "?" not in by_pod

    # Prometheus found the three pods through the API server and counted every request.
    def scraped() -> float | None:
        healthy = [t for t in prometheus.targets(namespace) if t["health"] == "up"]
        total = prometheus.value(f'sum(canarium_requests_total{{namespace="{namespace}"}})')
        return total if len(healthy) == 3 and total == 100 else None

    wait_until(scraped, timeout=20, interval=0.5, what="3 targets up and 100 requests counted")
    targets = prometheus.targets(namespace)
    assert {t["labels"]["pod"] for t in targets} == set(ips)
    assert {t["scrapeUrl"] for t in targets} == {f"http://{ip}:8080/metrics" for ip in ips.values()}
    per_pod = prometheus.query(
        f'sum by (pod) (canarium_requests_total{{namespace="{namespace}",code="200"}})'
    )
    assert {s["metric"]["pod"]: int(float(s["value"][1])) for s in per_pod} == dict(by_pod)
    prometheus.unwatch(namespace)

    # Deleting the ModelDeployment deletes its pods, which stops their processes (after the
    # pod template's preStop sleep, as a kubelet would).
    cluster.kubectl("delete", "mdep", NAME, "-n", namespace)
    wait_until(lambda: not serving_pods.processes(), timeout=30, what="processes stopped")
    wait_until(lambda: all(not p.running() for p in procs), timeout=30, what="servers exited")
    assert "Traceback" not in serving_pods.logs(procs[0].pod)


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
    operator: OperatorProcess,
    gateway_api_crds: None,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
) -> None:
    """The operator's gatewayAPI router is not built yet: the HTTPRoute is written by hand,
    over the stable and canary Services (both select the one revision when there is no
    canary), so the split shows in the Service each request was routed to."""
    cluster.apply(model_deployment(NAME, models.good_v1, replicas=2), namespace)
    _wait_ready(cluster, namespace)
    serving_pods.wait_serving(count=2, timeout=30)
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
    operator: OperatorProcess,
    models: E2EModels,
    serving_pods: ServingPods,
    load: Callable[..., LoadGenerator],
) -> None:
    cluster.apply(
        [
            model_deployment("drifted", models.drifted, replicas=1),
            model_deployment("broken", models.broken, replicas=1),
        ],
        namespace,
    )
    for name in ("drifted", "broken"):
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=60s"
        )
    serving_pods.wait_serving(count=2, timeout=30)

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
