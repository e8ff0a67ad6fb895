"""Credentials the Kubernetes way, on the real node: S3 keys in a Secret reach the serving pods
by `env[].valueFrom.secretKeyRef` and by `envFrom`, the model comes from a real S3 server
(versitygw, checking SigV4) on this machine's bridge address, and the Secret's value shows up
nowhere the operator or the server write: status, events, logs, metrics, the revisions'
Deployments."""

from __future__ import annotations

import dataclasses
import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import REAL_NODE, Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels, model_deployment
from tests.s3server import REGION, S3Server, start_s3_server

pytestmark = pytest.mark.usefixtures("restricted")

ACCESS_KEY = "canarium-e2e"
# Unique per run, so a hit below can only be this run's leak. '/' and '+' as real keys have.
SECRET_VALUE = f"e2e/{secrets.token_urlsafe(24)}+Secret"
WRONG_VALUE = f"wrong/{secrets.token_urlsafe(24)}+Secret"
BUCKET = "models"
KEY = "iris/1.0.0/model.onnx"


@pytest.fixture(scope="module")
def s3(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(
        tmp_path_factory.mktemp("s3"),
        host=cluster.host_address(),
        access_key=ACCESS_KEY,
        secret_key=SECRET_VALUE,
    )
    yield server
    server.stop()


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": data,
    }


def s3_deployment(name: str, models: E2EModels, serving: dict[str, Any]) -> dict[str, Any]:
    model = dataclasses.replace(models.good_v1, uri=f"s3://{BUCKET}/{KEY}")
    manifest = model_deployment(name, model, version="1.0.0", replicas=1)
    manifest["spec"]["serving"].update(serving)
    return manifest


def key_ref(secret_name: str, key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.get_json("mdep", name, "-n", namespace).get("status") or {}
    return got


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def http_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body.decode("utf-8", "replace")


def serving_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", "canarium.dev/deployment")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_logs(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> str:
    name = pod["metadata"]["name"]
    out = cluster.kubectl("logs", "-n", namespace, name, "--tail=-1", check=False).stdout
    restarted = any(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])
    if restarted:  # a crash-looping server: what it said before it exited
        out += cluster.kubectl(
            "logs", "-n", namespace, name, "--previous", "--tail=-1", check=False
        ).stdout
    return out


def test_s3_keys_from_a_secret_serve_the_model_and_leak_nowhere(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    s3: S3Server,
    load: Callable[..., LoadGenerator],
    tmp_path: Path,
) -> None:
    s3.put(BUCKET, KEY, models.good_v1.path.read_bytes())
    where = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": REGION}
    cluster.apply(
        [
            secret("s3-keys", {"access-key": ACCESS_KEY, "secret-key": SECRET_VALUE}),
            secret(
                "s3-env", {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_VALUE}
            ),
            secret("s3-wrong", {"access-key": ACCESS_KEY, "secret-key": WRONG_VALUE}),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "s3-where"},
                "data": where,
            },
        ],
        namespace,
    )
    plain = [{"name": k, "value": v} for k, v in where.items()]
    by_key_ref = [
        *plain,
        {"name": "AWS_ACCESS_KEY_ID", **key_ref("s3-keys", "access-key")},
        {"name": "AWS_SECRET_ACCESS_KEY", **key_ref("s3-keys", "secret-key")},
    ]
    cluster.apply(
        [
            s3_deployment("iris", models, {"env": by_key_ref}),
            s3_deployment(
                "iris-envfrom",
                models,
                {
                    "envFrom": [
                        {"secretRef": {"name": "s3-env"}},
                        {"configMapRef": {"name": "s3-where"}},
                    ]
                },
            ),
            s3_deployment(
                "iris-wrong",
                models,
                {
                    "env": [
                        *plain,
                        {"name": "AWS_ACCESS_KEY_ID", **key_ref("s3-wrong", "access-key")},
                        {"name": "AWS_SECRET_ACCESS_KEY", **key_ref("s3-wrong", "secret-key")},
                    ]
                },
            ),
        ],
        namespace,
    )
    for name in ("iris", "iris-envfrom"):
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"mdep/{name}", "-n", namespace, "--timeout=180s",
            timeout=190,
        )  # fmt: skip
        answered = load(name, models.x, rate=20, max_requests=20, duration=30).run()
        assert answered.by(lambda r: f"{r.status} {r.version}") == {"200 1.0.0": 20}, name

    # A wrong key: the store refuses it, the server says why, the deployment is Degraded.
    def degraded() -> dict[str, Any] | None:
        st = status_of(cluster, namespace, "iris-wrong")
        return st if condition(st, "Degraded").get("status") == "True" else None

    st = wait_until(degraded, timeout=180, interval=1, what="iris-wrong Degraded")
    cond = condition(st, "Degraded")
    assert cond["reason"] == "ModelLoadFailed", cond
    assert "SignatureDoesNotMatch" in cond["message"], cond
    assert f"s3://{BUCKET}/{KEY}" in cond["message"], cond

    # The serving pods run with references only; the kubelet resolved them.
    pods = serving_pods(cluster, namespace)
    assert {p["metadata"]["labels"]["canarium.dev/deployment"] for p in pods} == {
        "iris",
        "iris-envfrom",
        "iris-wrong",
    }
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        if cluster.local:  # real containers, not kwok's simulated ones
            assert pod["spec"].get("nodeName") == REAL_NODE, pod["spec"].get("nodeName")

    # Nowhere: status, events, the operator's and the servers' logs and metrics, Deployments.
    said: dict[str, str] = {}
    said["status"] = json.dumps(cluster.get_json("mdep", "-n", namespace))
    said["events"] = json.dumps(cluster.get_json("events", "-n", namespace))
    said["deployments"] = json.dumps(cluster.get_json("deployments", "-n", namespace))
    said["pods"] = json.dumps(pods)
    said["operator log"] = operator.all_logs()
    said["operator metrics"] = http_get(operator.metrics_url())
    for pod in pods:
        name = pod["metadata"]["name"]
        said[f"log of {name}"] = pod_logs(cluster, namespace, pod)
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        if ready.get("Ready") == "True":
            said[f"metrics of {name}"] = http_get(f"http://{pod['status']['podIP']}:8080/metrics")
    wrong_logs = [v for k, v in said.items() if k.startswith("log of iris-wrong")]
    assert any("SignatureDoesNotMatch" in log for log in wrong_logs), wrong_logs
    assert sum(k.startswith("metrics of ") for k in said) == 2, list(said)
    assert "canarium_model_ready" in said["metrics of " + pods_named(pods, "iris")[0]]
    leaks = [
        where
        for where, text in said.items()
        for value in (SECRET_VALUE, WRONG_VALUE)
        if value in text
    ]
    assert not leaks, leaks


def pods_named(pods: list[dict[str, Any]], deployment: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["labels"]["canarium.dev/deployment"] == deployment
    ]
