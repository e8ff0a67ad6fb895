"""make demo: the local cluster with its real node, the images, the operator installed from its
image (`kubectl apply -k manifests/install`), and the iris story on real containers: 1.0.0
served through its Service's ClusterIP, a good 2.0.0 canaried and promoted, a broken 3.0.0
rolled back, with live traffic all along. Then the closed loop: live inputs drift, Drifted is
raised, the retraining Job trains with the training image and uploads to an S3 server (versitygw
on this machine), the retrained model is canaried, judged and promoted; a retrained model that
predicts worse is rolled back, and the cooldown keeps the loop from spinning.

The cluster and the operator keep running afterwards; `make cluster-down` stops everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "hack" / "cluster.sh"
VENV_BIN = Path(sys.executable).parent
NAMESPACE = "canarium-demo"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


class Kubectl:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.base = [kubectl, "--kubeconfig", kubeconfig]

    def __call__(self, *args: str, show: bool = True, stdin: str | None = None) -> str:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        out = subprocess.run(
            [*self.base, *args], check=True, capture_output=True, text=True, input=stdin
        ).stdout
        if show:
            print(out, end="", flush=True)
        return out


def main() -> int:
    say("Local Kubernetes cluster: control plane, a real node (containerd, kubelet, kube-proxy)")
    subprocess.run([str(CLUSTER), "up"], check=True)
    kubeconfig = sh(str(CLUSTER), "kubeconfig")
    kubectl = Kubectl(sh(str(CLUSTER), "kubectl"), kubeconfig)
    kubectl("get", "nodes", "-o", "wide")

    say("The operator, installed from its image: kubectl apply -k manifests/install")
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests/install"))
    # The image just built under the same tag: an operator already running (an earlier demo)
    # restarts on it, else it would keep the old one.
    kubectl("rollout", "restart", "-n", "canarium-system", "deploy/canarium-operator")
    kubectl("rollout", "status", "-n", "canarium-system", "deploy/canarium-operator",
            "--timeout=180s")  # fmt: skip
    kubectl("get", "pods", "-n", "canarium-system", "-o", "wide")

    say("Models trained with scikit-learn, packaged as ONNX with reference statistics")
    sys.path.insert(0, str(REPO))
    from tests.e2e.cluster import Cluster
    from tests.e2e.models import build_e2e_models, in_configmap

    models = build_e2e_models(REPO / "build" / "demo-models")
    # A fresh namespace each run: the demo tells the same story every time.
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
    kubectl("create", "namespace", NAMESPACE)
    kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    cluster = Cluster(Path(kubeconfig), kubectl.base[0], local=True)
    stored = {}
    for model in (models.good_v1, models.good_v2, models.broken):
        stored[model.name] = in_configmap(cluster, NAMESPACE, model)
        print(f"  {model.name:<8} -> {stored[model.name].uri}")
    story(kubectl, kubeconfig, cluster, models, stored)
    closed_loop(kubectl, kubeconfig, cluster, models)
    print(
        f"\nThe cluster and the operator keep running:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get mdep,pods -n {NAMESPACE} -o wide\n"
        f"`make cluster-down` stops everything."
    )
    return 0


def story(
    kubectl: Kubectl, kubeconfig: str, cluster: Any, models: Any, stored: dict[str, Any]
) -> None:
    """A good canary promoted, then a broken one rolled back."""
    from tests.e2e.load import LoadGenerator
    from tests.e2e.models import model_deployment

    policy = {
        "steps": [
            {"setWeight": 10},
            {"pause": {"duration": "10s"}},
            {"setWeight": 50},
            {"pause": {"duration": "10s"}},
            {"setWeight": 100},
        ],
        "analysis": {
            "interval": "5s",
            "failureLimit": 2,
            "minSamples": 20,
            "checks": {
                "errorRate": {"max": 0.02},
                "latencyP99": {"maxMs": 500},
                "predictionDrift": {"maxPSI": 0.25},
            },
        },
    }

    def apply(model: object, version: str) -> None:
        manifest = model_deployment(
            "iris",
            model,
            version=version,
            replicas=4,
            rollout={"policy": policy},
        )
        kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(manifest))

    def status_of() -> dict[str, object]:
        got = json.loads(kubectl("get", "mdep", "iris", "-n", NAMESPACE, "-o", "json", show=False))
        return dict(got.get("status") or {})

    def canarium_status() -> None:
        print("$ kubectl canarium status iris", flush=True)
        subprocess.run([str(VENV_BIN / "kubectl-canarium"), "status", "iris", "-n", NAMESPACE],
                       env={**os.environ, "KUBECONFIG": kubeconfig}, check=True)  # fmt: skip

    def wait_for(check: object, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not check(status_of()):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; status: {status_of()}")
            time.sleep(1)

    say("iris 1.0.0 (logistic regression) under a canary policy: 10% → 50% → 100%")
    apply(stored["good_v1"], "1.0.0")
    kubectl("wait", "--for=condition=Ready", "mdep/iris", "-n", NAMESPACE, "--timeout=180s")
    kubectl("get", "mdep", "-n", NAMESPACE)
    kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide")
    kubectl("get", "service", "iris", "-n", NAMESPACE)
    # start() waits until the Service answers (kube-proxy programs it a moment after Ready).
    print("traffic: 100 requests/s to the Service's ClusterIP (kube-proxy picks the pod)")
    load = LoadGenerator(cluster, NAMESPACE, "iris", models.x, rate=100, duration=900)
    load.start()

    say("A good new version, 2.0.0 (random forest): analysed at each step, then promoted")
    apply(stored["good_v2"], "2.0.0")
    wait_for(lambda s: (s.get("canary") or {}).get("weight") == 50)
    canarium_status()
    wait_for(lambda s: s.get("phase") == "Healthy")
    canarium_status()
    kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide")

    say("A bad version, 3.0.0, whose model rejects the live inputs: rolled back automatically")
    apply(stored["broken"], "3.0.0")
    wait_for(lambda s: s.get("phase") == "Degraded")
    canarium_status()
    kubectl("get", "mdep", "-n", NAMESPACE)
    kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
            "involvedObject.kind=ModelDeployment,involvedObject.name=iris",
            "--sort-by=.eventTime")  # fmt: skip
    time.sleep(3)
    load.stop()
    results = load.results
    by_version = Counter(r.version for r in results if r.status == 200)
    rejected = sum(1 for r in results if r.status == 400)  # the broken model's answers
    failed = [r for r in results if r.status not in (200, 400)]
    print(f"\nload: {len(results)} requests through the ClusterIP; answered 200 by "
          + ", ".join(f"{v}: {n}" for v, n in sorted(by_version.items()))
          + f"; 400 from the broken 3.0.0 before its rollback: {rejected};"
          f" failed (no answer, 5xx): {len(failed)}")  # fmt: skip
    print("the spec still says 3.0.0 (GitOps: Git stays the source of truth until a person "
          "reverts it)")  # fmt: skip
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[:5]}")


def closed_loop(kubectl: Kubectl, kubeconfig: str, cluster: Any, models: Any) -> None:
    """Drift → Drifted → retraining Job → the retrained model canaried and promoted; a worse one
    rolled back; no spin."""
    from canarium import __version__

    from tests.s3server import REGION, start_s3_server

    name, retraining = "iris-loop", "iris-retrain"
    say("The closed loop: an S3 bucket (versitygw on this machine) with iris 1.0.0 in it")
    keys = {"access-key": "canarium-demo", "secret-key": "demo-secret-key-0123456789"}
    s3 = start_s3_server(
        REPO / "build" / "demo-s3",
        host=cluster.host_address(),
        access_key=keys["access-key"],
        secret_key=keys["secret-key"],
    )
    try:
        (s3.root / "models").mkdir()
        s3.put("models", "iris/1.0.0/model.onnx", models.good_v1.path.read_bytes())
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-keys"},
            "stringData": keys,
        }
        kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(secret), show=False)
        env = [
            {"name": "AWS_ENDPOINT_URL", "value": s3.endpoint},
            {"name": "AWS_REGION", "value": REGION},
            {"name": "AWS_ACCESS_KEY_ID",
             "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "access-key"}}},
            {"name": "AWS_SECRET_ACCESS_KEY",
             "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "secret-key"}}},
        ]  # fmt: skip
        loop(kubectl, kubeconfig, cluster, models, env, __version__, name, retraining)
    finally:
        s3.stop()
    print(f"(the S3 server is stopped: {name}'s pods keep the model they loaded)")


def loop(
    kubectl: Kubectl,
    kubeconfig: str,
    cluster: Any,
    models: Any,
    env: list[dict[str, Any]],
    version: str,
    name: str,
    retraining: str,
) -> None:
    from tests.e2e.load import LoadGenerator
    from tests.e2e.models import FEATURES

    deployment = {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://models/iris/1.0.0/model.onnx", "version": "1.0.0",
                      "sha256": models.good_v1.sha256},
            "serving": {"replicas": 2, "env": env},
            "monitoring": {"interval": "10s", "dataDrift": {"maxPSI": 0.1}, "windows": 2},
            "rollout": {"policy": {
                "steps": [{"setWeight": 50}, {"pause": {"duration": "20s"}}],
                "analysis": {"interval": "5s", "minSamples": 20, "checks": {
                    "errorRate": {"max": 0.02},
                    "latencyP99": {"maxMs": 500},
                    "predictionDrift": {"maxPSI": 0.25},
                }},
            }},
        },
    }  # fmt: skip
    container = {
        "name": "train",
        "image": f"ghcr.io/canarium-dev/canarium-training:{version}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["/opt/canarium/examples/train_iris.py"],
        "env": env,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    mretrain = {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelRetraining",
        "metadata": {"name": retraining},
        "spec": {
            "deploymentRef": {"name": name},
            "triggers": {"onDrift": True},
            "output": {"uri": "s3://models/iris/retrained"},
            "cooldown": "30m",
            "validation": {"metric": "accuracy", "notWorseThanBase": True, "tolerance": 0.05},
            "jobTemplate": {"spec": {"template": {"spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            }}}},
        },
    }  # fmt: skip

    def canarium(*args: str) -> None:
        print(f"$ kubectl canarium {' '.join(args)}", flush=True)
        subprocess.run([str(VENV_BIN / "kubectl-canarium"), *args, "-n", NAMESPACE],
                       env={**os.environ, "KUBECONFIG": kubeconfig}, check=True)  # fmt: skip

    def get(kind: str, obj: str) -> dict[str, Any]:
        out = kubectl("get", kind, obj, "-n", NAMESPACE, "-o", "json", show=False)
        return dict(json.loads(out).get("status") or {})

    def newest_run() -> dict[str, Any]:
        runs = get("mretrain", retraining).get("runs") or []
        return dict(runs[0]) if runs else {}

    def wait_for(what: str, check: Any, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}; {get('mretrain', retraining)}")
            time.sleep(2)

    say(f"{name} 1.0.0 from S3, monitored for drift, and the ModelRetraining a user writes")
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(deployment))
    print(yaml.safe_dump(mretrain, sort_keys=False), end="", flush=True)
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(mretrain))
    kubectl("wait", "--for=condition=Ready", f"mdep/{name}", "-n", NAMESPACE, "--timeout=180s")

    say("Live inputs shift (petal_length + 2 cm): Drifted, and the retraining Job runs")
    shifted = models.x.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    load = LoadGenerator(cluster, NAMESPACE, name, shifted, rate=40, max_rows=4, duration=1500)
    load.start()
    try:
        wait_for("a run", lambda: newest_run().get("phase") is not None)
        kubectl("get", "mdep", name, "-n", NAMESPACE, "-o",
                "jsonpath={.status.conditions[?(@.type=='Drifted')].message}{'\\n'}")  # fmt: skip
        kubectl("get", "jobs", "-n", NAMESPACE)
        wait_for("the candidate's canary", lambda: newest_run().get("phase") != "Running")
        canarium("status", name)
        wait_for("the outcome", lambda: newest_run().get("phase") not in ("Running", "Canarying"))
        canarium("status", name)
        canarium("status", f"mretrain/{retraining}")
        if newest_run().get("phase") != "Promoted":
            raise SystemExit(f"the retrained model was not promoted: {newest_run()}")

        worse_candidate(kubectl, mretrain, retraining, name, canarium, newest_run, wait_for)
        say("The traffic still drifts: the cooldown holds the next run (no retry storm)")
        time.sleep(25)
        kubectl("get", "mretrain,jobs", "-n", NAMESPACE)
        if len(get("mretrain", retraining).get("runs") or []) != 2:
            raise SystemExit("the loop ran again during its cooldown")
        kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                f"involvedObject.kind=ModelRetraining,involvedObject.name={retraining}",
                "--sort-by=.eventTime")  # fmt: skip
    finally:
        load.stop()


def worse_candidate(
    kubectl: Kubectl,
    mretrain: dict[str, Any],
    retraining: str,
    name: str,
    canarium: Any,
    newest_run: Any,
    wait_for: Any,
) -> None:
    say("A retraining whose labels were scrambled (a broken data pipeline), its score not checked"
        " against the base: the canary's prediction drift rolls it back")  # fmt: skip
    worse = json.loads(json.dumps(mretrain))
    worse["spec"]["validation"]["notWorseThanBase"] = False
    worse["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "/opt/canarium/examples/train_iris.py", "--label-noise", "1.0"
    ]  # fmt: skip
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(worse))
    before = newest_run().get("name")
    canarium("retrain", retraining)
    wait_for("the second run", lambda: newest_run().get("name") != before)
    wait_for("its outcome",
             lambda: newest_run().get("phase") not in ("Running", "Canarying"))  # fmt: skip
    canarium("status", f"mretrain/{retraining}")
    canarium("status", name)
    if newest_run().get("phase") != "RolledBack":
        raise SystemExit(f"the scrambled model was not rolled back: {newest_run()}")


if __name__ == "__main__":
    sys.exit(main())
