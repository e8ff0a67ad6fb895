"""make demo: the local cluster with its real node, the images, the operator installed from its
image (`kubectl apply -k manifests/install`), and the iris story on real containers: 1.0.0
served through its Service's ClusterIP, a good 2.0.0 canaried and promoted, a broken 3.0.0
rolled back, with live traffic all along.

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


if __name__ == "__main__":
    sys.exit(main())
