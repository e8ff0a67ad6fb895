"""The operator as a real process, for e2e tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from canarium.settings import DEFAULT_SERVING_IMAGE

from tests import process
from tests.e2e.cluster import REPO, Cluster

CANARIUM = Path(sys.executable).parent / "canarium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    """`canarium run` watching one namespace, logging to a file."""

    def __init__(self, cluster: Cluster, namespace: str, log_dir: Path, *extra: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_dir / f"operator-{namespace}.log"
        self.extra = extra
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        liveness = free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(CANARIUM),
                "run",
                "--namespace",
                self.namespace,
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                f"http://127.0.0.1:{liveness}/healthz",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # The operator plays the in-cluster one: it reaches pods at their IPs.
            env={
                **self.cluster.env(),
                # The image `make images` loads into the real node (the install's).
                "CANARIUM_SERVING_IMAGE": DEFAULT_SERVING_IMAGE,
                "CANARIUM_POD_SCRAPE": "pod-ip",
            },
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while "controller started" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"operator did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an evicted pod."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        process.stop(self.proc, grace=15)

    def restart(self) -> None:
        self.kill()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def apply_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        name = crd.stem
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    os.environ.setdefault("CANARIUM_CRDS_APPLIED", "1")
