"""A real Prometheus (the Debian package's /usr/bin/prometheus) for the e2e tests.

It scrapes the serving pods the way a user's Prometheus does: role-pod targets, of which the
relabelling keeps pods labelled app.kubernetes.io/managed-by=canarium and their container
port named `http` (<podIP>:8080/metrics, the serving container).
Targets get the labels the Prometheus Operator gives a PodMonitor's targets (namespace, pod,
container, endpoint, job <namespace>/canarium-serving, honor_labels off), so queries written
for manifests/monitoring work unchanged (the servers' own `namespace` label, equal to the
target's, becomes `exported_namespace`).

Discovery: `kubernetes_sd_configs` (role pod, through the cluster's kubeconfig) when this
Prometheus has it. Debian's build (2.42.0+ds, bookworm) leaves Kubernetes discovery out
(`field kubernetes_sd_configs not found in type config.ScrapeConfig`), so then the test process
does the discovery: it lists the pods of the watched namespaces every 0.5 s and writes them to a
`file_sd_configs` file as kubernetes_sd would give them (one target per container port, with the
same `__meta_kubernetes_pod_*` labels), and the very same relabel_configs apply.

One Prometheus per session on a free port of 127.0.0.1, or of the real node's bridge address
(where the in-cluster operator reaches it), with its own data folder; tests add
their namespace with `watch(namespace)` (the configuration is rewritten and reloaded with
SIGHUP: the lifecycle API stays off). Scrape and evaluation interval: 1 s.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

from tests import process

BINARY = "prometheus"
MANAGED_BY_LABEL = "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"


def find_prometheus() -> str | None:
    return shutil.which(BINARY) or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


def has_kubernetes_sd(binary: str) -> bool:
    """Whether this Prometheus build has Kubernetes service discovery (asks its promtool)."""
    promtool = Path(binary).with_name("promtool")
    if not promtool.exists():
        return False
    conf = "scrape_configs:\n- job_name: probe\n  kubernetes_sd_configs: [{role: pod}]\n"
    proc = subprocess.run(
        [str(promtool), "check", "config", "--syntax-only", "/dev/stdin"],
        input=conf,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return proc.returncode == 0


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pod: Any) -> list[dict[str, Any]]:
    """The target groups kubernetes_sd (role pod) makes of one pod: one per container port."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    if not status.pod_ip:
        return []
    labels = {
        "__meta_kubernetes_namespace": meta.namespace,
        "__meta_kubernetes_pod_name": meta.name,
        "__meta_kubernetes_pod_ip": status.pod_ip,
        "__meta_kubernetes_pod_uid": meta.uid,
        "__meta_kubernetes_pod_node_name": spec.node_name or "",
        "__meta_kubernetes_pod_host_ip": status.host_ip or "",
        "__meta_kubernetes_pod_phase": status.phase or "",
        "__meta_kubernetes_pod_ready": str(
            any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        ).lower(),
    }
    for key, value in (meta.labels or {}).items():
        labels[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"] = "true"
    for key, value in (meta.annotations or {}).items():
        labels[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_annotationpresent_{_sanitize(key)}"] = "true"
    groups = []
    for container in spec.containers:
        for port in container.ports or []:
            groups.append(
                {
                    "targets": [f"{status.pod_ip}:{port.container_port}"],
                    "labels": {
                        **labels,
                        "__meta_kubernetes_pod_container_name": container.name,
                        "__meta_kubernetes_pod_container_image": container.image or "",
                        "__meta_kubernetes_pod_container_init": "false",
                        "__meta_kubernetes_pod_container_port_name": port.name or "",
                        "__meta_kubernetes_pod_container_port_number": str(port.container_port),
                        "__meta_kubernetes_pod_container_port_protocol": port.protocol or "TCP",
                    },
                }
            )
    return groups


def scrape_config(
    kubeconfig: Path, namespaces: list[str], interval: str, targets_file: Path | None
) -> dict[str, Any]:
    """The scrape job: what a PodMonitor for the serving pods becomes, in plain config.
    With `targets_file`, discovery is file_sd over that file instead of kubernetes_sd."""
    discovery: dict[str, Any] = (
        {"file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}
        if targets_file is not None
        else {
            "kubernetes_sd_configs": [
                {
                    "role": "pod",
                    "kubeconfig_file": str(kubeconfig),
                    "namespaces": {"names": namespaces},
                }
            ]
        }
    )
    return {
        "job_name": "canarium-serving",
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": "/metrics",
        **discovery,
        "relabel_configs": [
            {"source_labels": [MANAGED_BY_LABEL], "regex": "canarium", "action": "keep"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "http",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Pending|Running",
                "action": "keep",
            },
            {
                "source_labels": [
                    "__meta_kubernetes_pod_ip",
                    "__meta_kubernetes_pod_container_port_number",
                ],
                "separator": ":",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"replacement": "http", "target_label": "endpoint"},
            {
                "source_labels": ["__meta_kubernetes_namespace"],
                "replacement": "$1/canarium-serving",
                "target_label": "job",
            },
        ],
    }


class Prometheus:
    """`discovery`: "kubernetes" (kubernetes_sd), "file" (file_sd fed from the pod list by this
    process) or "auto" (kubernetes if the binary has it)."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        interval: str = "1s",
        binary: str | None = None,
        discovery: str = "auto",
        host: str = "127.0.0.1",
    ) -> None:
        found = binary or find_prometheus()
        if not found:
            raise FileNotFoundError("prometheus not found: `make test-deps` installs it")
        self.binary = found
        if discovery == "auto":
            discovery = "kubernetes" if has_kubernetes_sd(found) else "file"
        self.discovery = discovery
        self.targets_file = workdir / "targets.json" if discovery == "file" else None
        self._core = (
            client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
            if discovery == "file"
            else None
        )
        self._stop = threading.Event()
        self._discoverer = threading.Thread(target=self._discover_loop, daemon=True)
        self.discovery_errors: list[str] = []
        self._sync_lock = threading.Lock()
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.interval = interval
        self.port = process.free_port()
        self.host = host
        self.url = f"http://{host}:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.namespaces: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0)

    def _write_config(self) -> None:
        conf: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            # An empty `names` would mean every namespace: no job until a test asks for one.
            "scrape_configs": (
                [scrape_config(self.kubeconfig, self.namespaces, self.interval, self.targets_file)]
                if self.namespaces
                else []
            ),
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(conf, sort_keys=False))
        tmp.replace(self.config_path)

    def start(self) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.targets_file is not None:
            self.targets_file.write_text("[]")
            self._discoverer.start()
        self._write_config()
        self._spawn()
        return self

    def _spawn(self) -> None:
        self.proc = process.start(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--web.console.templates=/nonexistent",
                "--web.console.libraries=/nonexistent",
                "--log.level=info",
            ],
            log_path=self.log_path,
            cwd=self.workdir,
            append=True,
        )
        try:
            process.wait_ready(self.proc, "prometheus", self.log_path, url=f"{self.url}/-/ready")
        except RuntimeError as e:
            self.stop()
            raise AssertionError(str(e)) from None

    def down(self) -> None:
        """Stop the server only (a fault: it is away); up() brings it back at the same
        address with the same data and configuration."""
        process.stop(self.proc, grace=20)

    def up(self) -> None:
        self._write_config()
        self._spawn()

    def stop(self) -> None:
        self._stop.set()
        if self._discoverer.is_alive():
            self._discoverer.join(10)
        self._http.close()
        process.stop(self.proc, grace=20)

    def log(self) -> str:
        return process.read_log(self.log_path)

    # --- configuration -----------------------------------------------------------------------
    def watch(self, namespace: str) -> None:
        """Discover and scrape the serving pods of `namespace` too (reloads the config)."""
        if namespace in self.namespaces:
            return
        self.namespaces.append(namespace)
        self._reload()

    def unwatch(self, namespace: str) -> None:
        if namespace in self.namespaces:
            self.namespaces.remove(namespace)
            self._reload()

    def _reload(self) -> None:
        assert self.proc is not None
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            loaded = yaml.safe_load(self._http.get("/api/v1/status/config").json()["data"]["yaml"])
            jobs = loaded.get("scrape_configs") or []
            if self.discovery == "file":
                if bool(jobs) == bool(self.namespaces):
                    self._sync_targets()
                    return
            else:
                sd = jobs[0]["kubernetes_sd_configs"][0] if jobs else {}
                names = sd.get("namespaces", {}).get("names", [])
                if sorted(names) == sorted(self.namespaces):
                    return
            time.sleep(0.1)
        raise AssertionError(f"prometheus did not reload its configuration:\n{self.log()[-3000:]}")

    # --- file_sd discovery (when the binary has no kubernetes_sd) --------------------------------
    def _discover_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync_targets()
            except Exception as e:  # keep the last targets; try again
                self.discovery_errors.append(f"{type(e).__name__}: {e}")
                del self.discovery_errors[:-20]
            self._stop.wait(0.5)

    def _sync_targets(self) -> None:
        assert self._core is not None
        assert self.targets_file is not None
        with self._sync_lock:
            groups = []
            for namespace in list(self.namespaces):
                pods = self._core.list_namespaced_pod(namespace, _request_timeout=10).items
                for pod in sorted(pods, key=lambda p: p.metadata.name):
                    groups.extend(pod_targets(pod))
            text = json.dumps(groups, indent=1, sort_keys=True)
            if self.targets_file.exists() and self.targets_file.read_text() == text:
                return
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.targets_file)

    # --- queries -------------------------------------------------------------------------------
    def _api(self, path: str, **params: str) -> Any:
        response = self._http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples ({"metric": {...}, "value": [t, "v"]})."""
        data = self._api("query", query=promql)
        if data["resultType"] != "vector":
            raise AssertionError(f"{promql!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of a query that gives one sample (e.g. a sum), None if empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{promql!r} gave {len(result)} samples, not one")
        return float(result[0]["value"][1])

    def targets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Active targets (with labels, health, lastError), of one namespace if given."""
        active: list[dict[str, Any]] = self._api("targets", state="active")["activeTargets"]
        if namespace is None:
            return active
        return [t for t in active if t["labels"].get("namespace") == namespace]
