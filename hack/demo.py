"""make demo: the local control plane, the CRDs, the operator, and the iris example Ready.

The operator runs as a background process of this machine against the local cluster (as
`canarium run` would from a laptop); its log and PID are kept in ~/.cache/canarium/demo/.
`make cluster-down` stops the cluster and the demo operator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
        [str(VENV_BIN / "canarium"), "run", "--namespace", NAMESPACE,
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

    say("The iris model, trained with scikit-learn and packaged as ONNX")
    models = REPO / "build" / "models"
    subprocess.run([str(VENV_BIN / "python"), str(REPO / "examples" / "train_models.py"),
                    "--out", str(models)], check=True)  # fmt: skip
    onnx = models / "iris" / "v1" / "model.onnx"
    namespace = kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml",
                        show=False)  # fmt: skip
    kubectl("apply", "-f", "-", stdin=namespace)
    configmap = kubectl(
        "create", "configmap", "iris-model", "-n", NAMESPACE, f"--from-file=model.onnx={onnx}",
        "--dry-run=client", "-o", "yaml", show=False,
    )  # fmt: skip
    kubectl("apply", "--server-side", "-f", "-", stdin=configmap)

    say("Apply the RolloutPolicy and the iris ModelDeployment")
    kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "manifests" / "examples"))
    kubectl("wait", "--for=condition=Ready", "mdep/iris", "-n", NAMESPACE, "--timeout=120s")
    kubectl("get", "mdep", "-n", NAMESPACE)
    kubectl("get", "deployments,services", "-n", NAMESPACE)

    print(
        f"\nThe cluster and the operator keep running:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get mdep -n {NAMESPACE}\n"
        f"`make cluster-down` stops both."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
