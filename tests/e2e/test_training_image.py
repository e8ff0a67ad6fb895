"""The training image on the real node: a retraining Job as the operator will run it (Pod
Security "restricted", read-only root filesystem, the env contract of
canarium_serving.contract's training section) trains iris with the shipped example, scores the
stable model on the same held-out rows, packages the candidate and uploads it to a real S3
server (versitygw on the bridge address); the candidate is then served by a ModelDeployment
from that URI with the manifest's sha256."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from canarium import __version__
from canarium_serving import contract
from canarium_serving.manifest import read_manifest

from tests.e2e.cluster import REAL_NODE, Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import E2EModels
from tests.s3server import REGION, S3Server, start_s3_server

pytestmark = pytest.mark.usefixtures("restricted")

REPO = Path(__file__).resolve().parents[2]
IMAGE = f"ghcr.io/canarium-dev/canarium-training:{__version__}"
ACCESS_KEY = "canarium-train"
SECRET_VALUE = f"train/{secrets.token_urlsafe(24)}+Secret"
BUCKET = "models"


@pytest.fixture(scope="module")
def s3(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(
        tmp_path_factory.mktemp("s3"),
        host=cluster.host_address(),
        access_key=ACCESS_KEY,
        secret_key=SECRET_VALUE,
    )
    (server.root / BUCKET).mkdir()
    yield server
    server.stop()


def s3_env(s3: S3Server) -> list[dict[str, Any]]:
    def key(name: str) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": name}}}

    return [
        {"name": "AWS_ENDPOINT_URL", "value": s3.endpoint},
        {"name": "AWS_REGION", "value": REGION},
        {"name": "AWS_ACCESS_KEY_ID", **key("access-key")},
        {"name": "AWS_SECRET_ACCESS_KEY", **key("secret-key")},
    ]


def training_job(name: str, env: list[dict[str, Any]], args: list[str]) -> dict[str, Any]:
    """A Job as the operator's retraining template will make one: restricted, read-only root
    filesystem with an emptyDir at /tmp, no API token."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "train",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": args,
                            "env": env,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                }
            },
        },
    }


def finished(cluster: Cluster, namespace: str, name: str) -> str | None:
    status = cluster.get_json("job", name, "-n", namespace).get("status") or {}
    for cond in status.get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def job_logs(cluster: Cluster, namespace: str, name: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, f"job/{name}", "--tail=-1", check=False).stdout


def locked_version(package: str) -> str:
    for line in (REPO / "constraints" / "images.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.lower().replace("_", "-") == package:
            return version
    raise AssertionError(f"{package} is not in constraints/images.txt")


def test_a_retraining_job_packages_uploads_and_its_model_is_served(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    s3: S3Server,
    load: Callable[..., LoadGenerator],
) -> None:
    s3.put(BUCKET, "iris/1.0.0/model.onnx", models.good_v1.path.read_bytes())
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-keys"},
            "type": "Opaque",
            "stringData": {"access-key": ACCESS_KEY, "secret-key": SECRET_VALUE},
        },
        namespace,
    )
    output = f"s3://{BUCKET}/iris/2.0.0"
    contract_env = {
        contract.ENV_MODEL_NAME: "iris",
        contract.ENV_MODEL_VERSION: "2.0.0",
        contract.TRAINING_ENV_OUTPUT_URI: output,
        contract.TRAINING_ENV_BASE_MODEL_URI: f"s3://{BUCKET}/iris/1.0.0/model.onnx",
        contract.TRAINING_ENV_BASE_MODEL_SHA256: models.good_v1.sha256,
        contract.TRAINING_ENV_BASE_MODEL_VERSION: "1.0.0",
        contract.TRAINING_ENV_DRIFT_REPORT: json.dumps({"features": [{"name": "petal_length"}]}),
        contract.TRAINING_ENV_TRIGGER: "drift",
        contract.ENV_DEPLOYMENT: "iris",
        contract.ENV_NAMESPACE: namespace,
    }
    env = [*({"name": k, "value": v} for k, v in contract_env.items()), *s3_env(s3)]
    example = "/opt/canarium/examples/train_iris.py"
    cluster.apply(training_job("retrain", env, [example, "--model", "forest"]), namespace)
    outcome = wait_until(
        lambda: finished(cluster, namespace, "retrain"), timeout=300, interval=1, what="the Job"
    )
    logs = job_logs(cluster, namespace, "retrain")
    assert outcome == "Complete", logs
    pod = cluster.get_json("pods", "-n", namespace, "-l", "job-name=retrain")["items"][0]
    if cluster.local:
        assert pod["spec"]["nodeName"] == REAL_NODE
    assert 'triggered by drift: {"features": [{"name": "petal_length"}]}' in logs
    summary = json.loads(logs.strip().splitlines()[-1])
    assert summary["model_uri"] == f"{output}/model.onnx"
    assert summary["base_metrics"]["accuracy"] > 0.9  # the stable model, fetched and checked

    manifest = read_manifest(s3.root / BUCKET / "iris" / "2.0.0", name="iris", version="2.0.0")
    assert manifest.model.sha256 == summary["sha256"]
    assert manifest.estimator.class_ == "sklearn.ensemble.RandomForestClassifier"
    assert (manifest.training.rows, manifest.holdout and manifest.holdout.rows) == (120, 30)
    assert manifest.holdout is not None
    assert manifest.holdout.metrics == summary["metrics"]
    for package in ("scikit-learn", "skl2onnx", "onnxruntime", "numpy"):  # the lock's
        assert manifest.libraries[package] == locked_version(package), package
    assert SECRET_VALUE not in logs

    # the candidate as the operator will roll it out: its URI and the manifest's sha256
    cluster.apply(
        {
            "apiVersion": "canarium.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {
                    "uri": summary["model_uri"],
                    "version": manifest.version,
                    "sha256": manifest.model.sha256,
                },
                "serving": {"replicas": 1, "env": s3_env(s3)},
            },
        },
        namespace,
    )
    cluster.kubectl(
        "wait", "--for=condition=Ready", "mdep/iris", "-n", namespace, "--timeout=180s",
        timeout=190,
    )  # fmt: skip
    answered = load("iris", models.x, rate=20, max_requests=20, duration=30).run()
    assert answered.by(lambda r: f"{r.status} {r.version}") == {"200 2.0.0": 20}


def test_a_job_without_its_script_fails_and_says_so(cluster: Cluster, namespace: str) -> None:
    """The image's default command is `python /train/train.py`: without a script there, the
    Job fails with Python's own message (nothing is trained or uploaded by accident)."""
    cluster.apply(training_job("no-script", [], []), namespace)
    outcome = wait_until(
        lambda: finished(cluster, namespace, "no-script"), timeout=180, interval=1, what="Job"
    )
    assert outcome == "Failed"
    logs = job_logs(cluster, namespace, "no-script")
    assert "can't open file '/train/train.py'" in logs, logs
