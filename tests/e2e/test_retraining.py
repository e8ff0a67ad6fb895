"""The closed loop on the real node: a ModelRetraining watches a monitored ModelDeployment;
live inputs shift, Drifted is raised, the operator runs the retraining Job from the user's
template (the training image, uploading to a real S3 server), validates the model the Job
reports and canaries it under the ModelDeployment's policy until it is promoted, and the loop
does not spin. A Job that fails and a model worse than the one it would replace each end in a
clear status, once, with the stable revision untouched."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from canarium_serving import contract

from tests.e2e.cluster import Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.load import LoadGenerator
from tests.e2e.models import FEATURES, E2EModels
from tests.e2e.test_cli import kubectl_canarium
from tests.e2e.test_rollout import endpoint_revisions, pods_of
from tests.e2e.test_training_image import ACCESS_KEY, BUCKET, IMAGE, SECRET_VALUE, s3_env
from tests.s3server import S3Server, start_s3_server

pytestmark = pytest.mark.usefixtures("restricted")

NAME = "iris"
RETRAINING = "iris-retrain"
INTERVAL = 8  # seconds: a monitoring window
OUTPUT = f"s3://{BUCKET}/iris/retrained"
EXAMPLE = "/opt/canarium/examples/train_iris.py"


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


def _base_model(cluster: Cluster, namespace: str, s3: S3Server, models: E2EModels) -> str:
    """iris 1.0.0 in the S3 bucket, and the Secret with the keys; its URI."""
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
    return f"s3://{BUCKET}/iris/1.0.0/model.onnx"


def _deployment(uri: str, models: E2EModels, s3: S3Server, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"uri": uri, "version": "1.0.0", "sha256": models.good_v1.sha256},
            "serving": {"replicas": 2, "env": s3_env(s3)},
            **spec,
        },
    }


def _retraining(s3: S3Server, args: list[str], **spec: Any) -> dict[str, Any]:
    """What a user writes: the training image running the shipped example, restricted, with
    the S3 keys from a Secret."""
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelRetraining",
        "metadata": {"name": RETRAINING},
        "spec": {
            "deploymentRef": {"name": NAME},
            "output": {"uri": OUTPUT},
            "jobTemplate": {
                "spec": {
                    "activeDeadlineSeconds": 600,
                    "template": {
                        "spec": {
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
                                    "env": s3_env(s3),
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
                }
            },
            **spec,
        },
    }


def _get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return cluster.get_json(kind, name, "-n", namespace)


def _jobs(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.get_json(
        "jobs", "-n", namespace, "-l", f"canarium.dev/retraining={RETRAINING}"
    )["items"]
    return sorted(item["metadata"]["name"] for item in items)


def _run(cluster: Cluster, namespace: str, phases: set[str], index: int = 0) -> dict[str, Any]:
    """Wait for the newest run (or an older one: `index`) to reach one of `phases`."""

    def reached() -> dict[str, Any] | None:
        runs = (_get(cluster, namespace, "mretrain", RETRAINING).get("status") or {}).get("runs")
        run: dict[str, Any] | None = runs[index] if runs and len(runs) > index else None
        return run if run is not None and run["phase"] in phases else None

    return wait_until(reached, timeout=420, interval=2, what=f"a run in {sorted(phases)}")


def _events(cluster: Cluster, namespace: str, name: str) -> str:
    return cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers",
    ).stdout  # fmt: skip


def _check_promoted(
    cluster: Cluster,
    namespace: str,
    s3: S3Server,
    run: dict[str, Any],
    uri: str,
    stable_before: str,
) -> str:
    """The promoted run's model and the ModelDeployment's status and events; its version."""
    version = str(run["model"]["version"])
    assert version == "1.0.0-rt1"
    assert run["model"]["uri"] == f"{OUTPUT}/{run['name']}/model.onnx"
    assert run["metrics"]["accuracy"] >= run["baseMetrics"]["accuracy"] - 0.05
    assert (s3.root / BUCKET / "iris" / "retrained" / run["name"] / "model.manifest.json").is_file()
    body = _get(cluster, namespace, "mdep", NAME)
    status = body["status"]
    assert status["stable"]["modelVersion"] == version
    assert status["stable"]["name"] == run["revision"] != stable_before
    assert status["retrained"]["run"] == run["name"]
    assert status["retrained"]["replacesVersion"] == "1.0.0"
    promoted = [h for h in status["history"] if h["outcome"] == "Promoted"]
    assert [h["modelVersion"] for h in promoted][:1] == [version]
    assert "Promoted" in _events(cluster, namespace, NAME)
    # The spec in Git is untouched.
    assert (body["spec"]["model"]["uri"], body["spec"]["model"]["version"]) == (uri, "1.0.0")
    return version


def test_drift_retrains_and_the_candidate_is_canaried_judged_and_promoted(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    s3: S3Server,
    load: Callable[..., LoadGenerator],
) -> None:
    uri = _base_model(cluster, namespace, s3, models)
    policy = {
        "steps": [{"setWeight": 50}, {"pause": {"duration": "8s"}}],
        "analysis": {
            "interval": "4s",
            "minSamples": 20,
            "provider": {"podMetrics": {}},
            "checks": {"errorRate": {"max": 0.05}, "latencyP99": {"maxMs": 2000}},
        },
    }
    monitoring = {"interval": f"{INTERVAL}s", "dataDrift": {"maxPSI": 0.1}, "windows": 2}
    cluster.apply(
        _deployment(uri, models, s3, monitoring=monitoring, rollout={"policy": policy}), namespace
    )
    # Not worse than the model it replaces by more than 0.05 of held-out accuracy (1.0.0 saw
    # the held-out rows in its training: it scores 1.0 on them).
    cluster.apply(
        _retraining(s3, [EXAMPLE], cooldown="10m", validation={"tolerance": 0.05}), namespace
    )
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=180s",
        timeout=190,
    )  # fmt: skip
    stable_before = _get(cluster, namespace, "mdep", NAME)["status"]["stable"]["name"]
    assert _get(cluster, namespace, "mretrain", RETRAINING)["status"]["phase"] == "Idle"

    # Live inputs shift (petal_length + 2 cm): Drifted, then a run triggered by it.
    shifted = models.x.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    traffic = load(NAME, shifted, rate=40, max_rows=4, duration=900, seed=5).start()
    run = _run(cluster, namespace, {"Running", "Canarying", "Promoted"})
    assert run["trigger"] == "drift"
    assert "petal_length" in run["reason"]
    job = _get(cluster, namespace, "job", run["name"])
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[contract.TRAINING_ENV_OUTPUT_URI] == f"{OUTPUT}/{run['name']}"
    assert env[contract.TRAINING_ENV_BASE_MODEL_URI] == uri
    assert env[contract.TRAINING_ENV_TRIGGER] == "drift"
    assert "petal_length" in env[contract.TRAINING_ENV_DRIFT_REPORT]

    # Its model: validated, the canary, judged, promoted.
    run = _run(cluster, namespace, {"Promoted", "RolledBack", "Rejected", "Failed"})
    logs = cluster.kubectl("logs", "-n", namespace, f"job/{run['name']}", check=False).stdout
    assert run["phase"] == "Promoted", (run, logs)
    version = _check_promoted(cluster, namespace, s3, run, uri, stable_before)
    # The replaced revision's pods drain (scaled to 0 when the run was promoted): once they are
    # out of the Service's endpoints, every answer is the retrained model's.
    wait_until(
        lambda: not pods_of(cluster, namespace, stable_before), timeout=60, what="old pods gone"
    )
    wait_until(
        lambda: endpoint_revisions(cluster, namespace, NAME) == {run["revision"]},
        timeout=30,
        what="the Service's endpoints are the retrained revision's only",
    )
    time.sleep(2)  # kube-proxy's rules follow the EndpointSlices within its 1 s minSyncPeriod
    answered = load(NAME, models.x, rate=20, max_requests=20, duration=30).run()
    assert answered.by(lambda r: f"{r.status} {r.version}") == {f"200 {version}": 20}

    # The traffic still drifts from the new model's reference: Drifted again, but the
    # cooldown holds the next run. One Job, no more.
    def cooling() -> dict[str, Any] | None:
        body = _get(cluster, namespace, "mretrain", RETRAINING)
        return body if body["status"].get("phase") == "CoolingDown" else None

    wait_until(cooling, timeout=INTERVAL * 8 + 30, interval=2, what="CoolingDown")
    time.sleep(INTERVAL * 2)
    assert _jobs(cluster, namespace) == [run["name"]]
    traffic.stop()
    retraining_events = _events(cluster, namespace, RETRAINING)
    for reason in ("RetrainingStarted", "CandidateAccepted", "CandidatePromoted"):
        assert reason in retraining_events, retraining_events

    shown = kubectl_canarium(cluster, "-n", namespace, "status", NAME)
    assert shown.returncode == 0, shown.stderr
    assert version in shown.stdout
    assert run["name"] in shown.stdout
    shown = kubectl_canarium(cluster, "-n", namespace, "status", f"mretrain/{RETRAINING}")
    assert shown.returncode == 0, shown.stderr
    assert "CoolingDown" in shown.stdout
    assert run["name"] in shown.stdout


def test_a_failing_job_and_a_worse_model_end_clearly_once_and_stable_stays(
    cluster: Cluster,
    namespace: str,
    operator: InstalledOperator,
    models: E2EModels,
    s3: S3Server,
) -> None:
    uri = _base_model(cluster, namespace, s3, models)
    cluster.apply(_deployment(uri, models, s3), namespace)
    manual = {"triggers": {"onDrift": False}, "cooldown": "1h"}
    cluster.apply(_retraining(s3, ["/no/such/train.py"], **manual), namespace)
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mdep/{NAME}", "-n", namespace, "--timeout=180s",
        timeout=190,
    )  # fmt: skip
    stable = _get(cluster, namespace, "mdep", NAME)["status"]["stable"]["name"]

    # 1. A person asks; the Job fails: one run, Failed, with the Job's reason; no retry.
    asked = kubectl_canarium(cluster, "-n", namespace, "retrain", RETRAINING)
    assert asked.returncode == 0, asked.stderr
    run = _run(cluster, namespace, {"Failed", "Promoted", "Canarying", "Rejected"})
    assert run["phase"] == "Failed", run
    assert run["trigger"] == "manual"
    assert run["message"].startswith("its Job failed: BackoffLimitExceeded"), run
    body = _get(cluster, namespace, "mretrain", RETRAINING)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RunFailed")
    assert body["status"]["consecutiveFailures"] == 1
    time.sleep(10)
    assert _jobs(cluster, namespace) == [run["name"]]

    # 2. The template trains on noisy labels: a worse model, rejected before any canary.
    worse = _retraining(s3, [EXAMPLE, "--label-noise", "0.7"], **manual)
    cluster.apply(worse, namespace)
    asked = kubectl_canarium(cluster, "-n", namespace, "retrain", RETRAINING)
    assert asked.returncode == 0, asked.stderr
    wait_until(
        lambda: len(_jobs(cluster, namespace)) == 2, timeout=30, interval=1, what="second Job"
    )
    second = _run(cluster, namespace, {"Rejected", "Failed", "Canarying", "Promoted"})
    logs = cluster.kubectl("logs", "-n", namespace, f"job/{second['name']}", check=False).stdout
    assert second["phase"] == "Rejected", (second, logs)
    assert "worse than the model it replaces" in second["message"]
    assert second["metrics"]["accuracy"] < second["baseMetrics"]["accuracy"]
    body = _get(cluster, namespace, "mretrain", RETRAINING)
    assert body["status"].get("candidate") is None
    assert body["status"]["consecutiveFailures"] == 2
    assert "CandidateRejected" in _events(cluster, namespace, RETRAINING)
    time.sleep(10)
    assert len(_jobs(cluster, namespace)) == 2
    status = _get(cluster, namespace, "mdep", NAME)["status"]
    assert status["stable"]["name"] == stable
    assert "canary" not in status
    assert status.get("retrained") is None
    assert status["phase"] == "Healthy"
