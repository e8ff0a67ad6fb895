"""make demo: the local control plane, the CRDs, the operator, and the iris example Ready.

The operator runs as a background process of this machine against the local cluster (as
`canarium run` would from a laptop); its log and PID are kept in ~/.cache/canarium/demo/.
`make cluster-down` stops the cluster and the demo operator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "hack" / "cluster.sh"
VENV_BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("CANARIUM_CACHE", Path.home() / ".cache" / "canarium")) / "demo"
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


def stop_previous_operator() -> None:
    pid_file = STATE / "operator.pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):  # kopf shuts down gracefully within seconds
                time.sleep(0.1)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)


def start_operator(kubeconfig: str) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    log = (STATE / "operator.log").open("w")
    proc = subprocess.Popen(
        # It plays the in-cluster operator: it reaches serving pods at their IPs.
        [str(VENV_BIN / "canarium"), "run", "--namespace", NAMESPACE, "--pod-scrape", "pod-ip",
         "--metrics-address", "127.0.0.1", "--metrics-port", "18080",
         "--liveness", "http://127.0.0.1:18081/healthz"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": kubeconfig},
        start_new_session=True,  # outlives `make demo`
    )  # fmt: skip
    (STATE / "operator.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while "controller started" not in (STATE / "operator.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the operator did not start; see {STATE / 'operator.log'}")
        time.sleep(0.2)
    return proc.pid


def main() -> int:
    say(
        "Local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    )
    subprocess.run([str(CLUSTER), "up"], check=True)
    kubeconfig = sh(str(CLUSTER), "kubeconfig")
    kubectl = Kubectl(sh(str(CLUSTER), "kubectl"), kubeconfig)
    kubectl("get", "nodes")

    say("CRDs")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", show=False)

    say("Operator (canarium run, in the background)")
    stop_previous_operator()
    pid = start_operator(kubeconfig)
    print(f"operator PID {pid}, log {STATE / 'operator.log'}")

    say("Models trained with scikit-learn, packaged as ONNX with reference statistics")
    sys.path.insert(0, str(REPO))
    from tests.e2e.cluster import Cluster
    from tests.e2e.models import build_e2e_models
    from tests.e2e.pods import ServingPods

    models = build_e2e_models(REPO / "build" / "demo-models")
    for model in (models.good_v1, models.good_v2, models.broken):
        print(f"  {model.name:<8} {model.uri}")
    # A fresh namespace each run: the demo tells the same story every time.
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
    kubectl("create", "namespace", NAMESPACE)

    cluster = Cluster(Path(kubeconfig), kubectl.base[0], local=True)
    # kwok simulates the pods; a real model server runs for each at the pod's IP, with the
    # env of the operator's pod template, and traffic goes where the Service sends it.
    pods = ServingPods(cluster, NAMESPACE, STATE / "pods").start()
    try:
        story(kubectl, kubeconfig, cluster, models, pods)
    finally:
        pods.stop()  # the model servers are this process's children; the cluster stays
    print(
        f"\nThe cluster and the operator keep running:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get mdep -n {NAMESPACE}\n"
        f"`make cluster-down` stops both."
    )
    return 0


def story(kubectl: Kubectl, kubeconfig: str, cluster: Any, models: Any, pods: Any) -> None:
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
    apply(models.good_v1, "1.0.0")
    kubectl("wait", "--for=condition=Ready", "mdep/iris", "-n", NAMESPACE, "--timeout=120s")
    pods.wait_serving(count=4, timeout=60)
    load = LoadGenerator(cluster, NAMESPACE, "iris", models.x, rate=100, duration=600,
                         probe=pods.probe_ready)  # fmt: skip
    load.start()
    kubectl("get", "mdep", "-n", NAMESPACE)

    say("A good new version, 2.0.0 (random forest): analysed at each step, then promoted")
    apply(models.good_v2, "2.0.0")
    wait_for(lambda s: (s.get("canary") or {}).get("weight") == 50)
    canarium_status()
    wait_for(lambda s: s.get("phase") == "Healthy")
    canarium_status()

    say("A bad version, 3.0.0, whose model rejects the live inputs: rolled back automatically")
    apply(models.broken, "3.0.0")
    wait_for(lambda s: s.get("phase") == "Degraded")
    canarium_status()
    kubectl("get", "mdep", "-n", NAMESPACE)
    kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
            "involvedObject.kind=ModelDeployment,involvedObject.name=iris",
            "--sort-by=.eventTime")  # fmt: skip
    ok = sum(1 for r in load.results if r.status == 200)
    print(f"\nload: {len(load.results)} requests, {ok} answered 200; the spec still says 3.0.0"
          " (GitOps: Git stays the source of truth until a person reverts it)")  # fmt: skip
    load.stop()


if __name__ == "__main__":
    sys.exit(main())
