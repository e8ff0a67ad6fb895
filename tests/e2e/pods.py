"""Real model server processes for simulated pods.

kwok simulates pods: it marks them Running and Ready and gives them an IP from the node's
podCIDR (hack/cluster.sh: 127.64.<node>.0/24, loopback, so nothing needs setting up: Linux
routes all of 127.0.0.0/8 to `lo`). Nothing runs in them. `ServingPods` plays the kubelet for
the serving pods of one namespace: for every pod that has an IP and a container whose env has
CANARIUM_MODEL_URI, it starts one real `canarium-serve` with exactly that container's env,
listening at <podIP>:8080; it stops the process (SIGTERM, then SIGKILL) when the pod is being
deleted or changes IP. Those processes are what answer traffic and export /metrics.

Differences from a kubelet, on purpose: readiness stays kwok's (a pod is Ready whether or not its
process is up: wait with `wait_serving` before sending traffic), a process that exits is not
restarted, and the few paths that are volumes in a pod are per-pod folders here:
CANARIUM_MODEL_CACHE_DIR (an emptyDir in the pod), the termination log, and configmap:// models
(the ConfigMap's keys are written to a folder that CANARIUM_CONFIGMAP_ROOT points at).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from tests.e2e.cluster import Cluster

CANARIUM_SERVE = Path(sys.executable).parent / "canarium-serve"
ENV_MODEL_URI = "CANARIUM_MODEL_URI"
LABEL_REVISION = "canarium.dev/revision"
LABEL_DEPLOYMENT = "canarium.dev/deployment"
PORT = 8080


@dataclass
class PodProcess:
    """One pod and the model server process started for it."""

    pod: str
    uid: str
    ip: str
    labels: dict[str, str]
    env: dict[str, str]  # the container's env as given to the process (plus the overrides)
    log_path: Path
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{PORT}"

    @property
    def revision(self) -> str:
        """The revision (child Deployment) name, as the pod's CANARIUM_REVISION."""
        return self.env.get("CANARIUM_REVISION", "")

    @property
    def revision_hash(self) -> str:
        return self.labels.get(LABEL_REVISION, "")

    @property
    def role(self) -> str:
        return self.env.get("CANARIUM_ROLE", "")

    def running(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        if not self.running():
            return False
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies, so a
    crashed test or demo never leaves servers holding pod IPs. Only a plain system call runs
    between fork and exec (no import, no lock), which is what makes preexec_fn safe here."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_processes(procs: Iterable[PodProcess], grace: float = 5.0) -> None:
    """SIGTERM all, wait up to `grace` seconds, SIGKILL what is left."""
    procs = [p for p in procs if p.running()]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(5)


class ServingPods:
    """Runs one real `canarium-serve` per serving pod of `namespace`, at the pod's own IP.

    Polls the pod list every `interval` seconds on a thread (a list is simpler to get right
    than a watch, and 5 lists a second of one namespace cost the API server nothing).
    `stopped` keeps the processes of pods that went away (name -> process), for their logs.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_dir: Path,
        *,
        interval: float = 0.2,
        label_selector: str = "app.kubernetes.io/managed-by=canarium",
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.interval = interval
        self.label_selector = label_selector
        # An API client of its own: this one is used from the polling thread only.
        self._core = client.CoreV1Api(
            config.new_client_from_config(config_file=str(cluster.kubeconfig))
        )
        self._lock = threading.RLock()
        self._procs: dict[str, PodProcess] = {}  # by pod uid
        self._probed: set[str] = set()  # pod uids whose server passed its readiness probe
        self._prestop: dict[str, float] = {}  # pod uid -> preStop sleep seconds
        self._draining: dict[str, tuple[PodProcess, float]] = {}  # uid -> (process, SIGTERM at)
        self.stopped: dict[str, PodProcess] = {}  # by pod name
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pods-{namespace}", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> ServingPods:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with self._lock:
            procs = [*self._procs.values(), *(p for p, _ in self._draining.values())]
            self._procs.clear()
            self._draining.clear()
        _stop_processes(procs)
        for p in procs:
            self.stopped[p.pod] = p

    def __enter__(self) -> ServingPods:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- queries -----------------------------------------------------------------------------
    def probe_ready(self, ip: str, pod_uid: str = "") -> bool:
        """The readiness probe the kubelet would run for the pod at `ip` (kwok marks pods
        Ready without running one): its server process answers /v2/health/ready with 200.
        With `pod_uid`, only that pod's process counts (kwok may give a deleted pod's IP to a
        new pod at once). Once ready, a process stays ready until it stops."""
        with self._lock:
            proc = next(
                (
                    p
                    for p in self._procs.values()
                    if p.ip == ip and (not pod_uid or p.uid == pod_uid)
                ),
                None,
            )
        if proc is None or not proc.running():
            return False
        if proc.uid in self._probed:
            return True
        if proc.ready():
            self._probed.add(proc.uid)
            return True
        return False

    def processes(self) -> dict[str, PodProcess]:
        """The current processes, by pod name."""
        with self._lock:
            return {p.pod: p for p in self._procs.values()}

    def by_ip(self) -> dict[str, PodProcess]:
        """Pod IP -> process, current, draining and stopped (the current one wins on a reused
        IP)."""
        with self._lock:
            out = {p.ip: p for p in self.stopped.values()}
            out.update({p.ip: p for p, _ in self._draining.values()})
            out.update({p.ip: p for p in self._procs.values()})
            return out

    def logs(self, pod: str) -> str:
        with self._lock:
            found = self.processes().get(pod) or self.stopped.get(pod)
        return found.log() if found else ""

    def select(
        self, pods: Iterable[str] | None = None, revision: str | None = None
    ) -> list[PodProcess]:
        """Processes of the named pods, or of one revision (its hash or its full name)."""
        procs = list(self.processes().values())
        if pods is not None:
            wanted = set(pods)
            procs = [p for p in procs if p.pod in wanted]
        if revision is not None:
            procs = [p for p in procs if revision in (p.revision_hash, p.revision)]
        return sorted(procs, key=lambda p: p.pod)

    def wait_serving(
        self,
        pods: Iterable[str] | None = None,
        *,
        revision: str | None = None,
        count: int | None = None,
        timeout: float = 60.0,
    ) -> list[PodProcess]:
        """Wait until the selected pods' processes answer /v2/health/ready with 200.

        `pods`: pod names (all must be there); `revision`: a revision hash or name; `count`:
        how many processes to expect (default: the number of `pods`, else at least one).
        """
        names = sorted(set(pods)) if pods is not None else None
        expect = count if count is not None else (len(names) if names is not None else None)
        deadline = time.monotonic() + timeout
        last: list[PodProcess] = []
        while time.monotonic() < deadline:
            last = self.select(names, revision)
            enough = len(last) == expect if expect is not None else bool(last)
            if enough and all(p.ready() for p in last):
                return last
            for p in last:
                if not p.running():
                    raise AssertionError(
                        f"model server of pod {p.pod} exited with {p.proc.returncode}:\n{p.log()}"
                    )
            time.sleep(0.1)
        state = {p.pod: (p.ip, p.running(), p.ready()) for p in last}
        raise AssertionError(
            f"pods {names or ''} revision {revision or ''} count {expect}: not all serving after "
            f"{timeout}s; (ip, running, ready): {state}; errors: {self.errors}"
        )

    # --- the polling loop --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # keep polling: the next list may work
                self.errors.append(f"{type(e).__name__}: {e}")
                del self.errors[:-20]
            self._stop.wait(self.interval)

    def _sync(self) -> None:
        pods = self._core.list_namespaced_pod(
            self.namespace, label_selector=self.label_selector, _request_timeout=10
        ).items
        wanted: dict[str, tuple[Any, Any]] = {}  # uid -> (pod, container)
        for pod in pods:
            if pod.metadata.deletion_timestamp is not None or not pod.status.pod_ip:
                continue
            for container in pod.spec.containers:
                if any(e.name == ENV_MODEL_URI for e in container.env or []):
                    wanted[pod.metadata.uid] = (pod, container)
                    break
        now = time.monotonic()
        with self._lock:
            gone = [
                p
                for uid, p in self._procs.items()
                if uid not in wanted or wanted[uid][0].status.pod_ip != p.ip
            ]
            # Like a kubelet: a terminating pod's preStop hook (a sleep) runs before SIGTERM,
            # while the endpoints already leave it out, so in-flight traffic drains.
            for p in gone:
                del self._procs[p.uid]
                self._draining[p.uid] = (p, now + self._prestop.pop(p.uid, 0.0))
            wanted_ips = {pod.status.pod_ip for pod, _ in wanted.values()}
            due = [
                p
                for p, deadline in self._draining.values()
                if deadline <= now or p.ip in wanted_ips  # a new pod got its IP: make room
            ]
            for p in due:
                del self._draining[p.uid]
                self.stopped[p.pod] = p
        _stop_processes(due)
        for uid, (pod, container) in wanted.items():
            with self._lock:
                if uid in self._procs:
                    continue
            started = self._start(pod, container)
            with self._lock:
                self._procs[uid] = started

    def _start(self, pod: Any, container: Any) -> PodProcess:
        name = pod.metadata.name
        pre_stop = container.lifecycle.pre_stop if container.lifecycle else None
        if pre_stop is not None and pre_stop.sleep is not None:
            self._prestop[pod.metadata.uid] = float(pre_stop.sleep.seconds)
        ip = pod.status.pod_ip
        pod_dir = self.log_dir / name
        pod_dir.mkdir(parents=True, exist_ok=True)
        env = {e.name: e.value for e in container.env or [] if e.value is not None}
        env["CANARIUM_HOST"] = ip
        # Volumes of the pod, as per-pod folders here.
        env["CANARIUM_MODEL_CACHE_DIR"] = str(pod_dir / "model-cache")
        env["CANARIUM_TERMINATION_LOG"] = str(pod_dir / "termination-log")
        uri = urllib.parse.urlsplit(env[ENV_MODEL_URI])
        if uri.scheme == "configmap":
            env["CANARIUM_CONFIGMAP_ROOT"] = str(self._configmap(uri.netloc, pod_dir))
        base = {k: v for k, v in os.environ.items() if not k.startswith("CANARIUM_")}
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [str(CANARIUM_SERVE)],
                env={**base, **env},
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (see _die_with_parent)
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=pod_dir,
            )
        return PodProcess(
            pod=name,
            uid=pod.metadata.uid,
            ip=ip,
            labels=dict(pod.metadata.labels or {}),
            env=env,
            log_path=log_path,
            proc=proc,
        )

    def _configmap(self, name: str, pod_dir: Path) -> Path:
        root = pod_dir / "configmap"
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        cm = self._core.read_namespaced_config_map(name, self.namespace)
        for key, value in (cm.binary_data or {}).items():
            (target / key).write_bytes(base64.b64decode(value))
        for key, value in (cm.data or {}).items():
            (target / key).write_text(value)
        return root
