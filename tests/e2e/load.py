"""Inference traffic that goes where Kubernetes would send it.

There is no kube-proxy and no Gateway here, so `LoadGenerator` does their routing itself, from
the same objects they read:

- router `replicas` (a Service): every request picks uniformly among the ready endpoints of the
  EndpointSlices of the entry Service (label `kubernetes.io/service-name=<name>`), as
  kube-proxy does;
- router `gatewayAPI`: the HTTPRoute named after the ModelDeployment chooses the rule (path,
  method and header matches, with the Gateway API precedence), then a backend Service by the
  backendRefs' weights, then a ready endpoint of that Service's EndpointSlices. RequestMirror
  filters send a copy to the mirror backend (its answer is recorded apart, in `mirrored`).

Endpoints: the API server refuses loopback addresses in EndpointSlices ("may not be in the
loopback range"), so on the local control plane, whose pod IPs are 127.64.<node>.<n>, the
EndpointSlice controller never fills them in. For a Service whose EndpointSlices are empty and
whose selected pods have loopback IPs, the generator computes what that controller would have
written (pods matching the selector, Ready, not terminating, at the target port) and
`routing().sources[service]` says "selector"; everywhere else (kind, minikube, non-loopback pod
IPs) it reads the EndpointSlices ("slices"). `selector_fallback=False` turns that off.

Routing objects are re-read every `refresh` seconds on a thread. Requests are V2 infer calls
with FP32 rows drawn from `data` (batch of 1..max_rows), at a bounded rate, for a bounded time
or number of requests; each result keeps the endpoint, the status, the latency, the rows sent
and the labels answered. A status of 0 is a connection error or timeout; -1 means there was no
ready endpoint (or no route); 500 with no endpoint is a rule whose backends all weigh 0.
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from kubernetes import client, config

from tests.e2e.cluster import Cluster

NO_ENDPOINT = -1
CONNECTION_ERROR = 0
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"


@dataclass(frozen=True)
class Endpoint:
    service: str
    ip: str
    port: int
    pod_uid: str = ""  # the pod behind it (kwok may hand a deleted pod's IP to a new one)


@dataclass(frozen=True)
class Result:
    t: float  # seconds since the generator started, when the request was sent
    service: str  # the backend Service the request was routed to
    ip: str  # the endpoint (pod IP); "" when there was none
    status: int  # HTTP status, CONNECTION_ERROR or NO_ENDPOINT
    latency: float  # seconds
    rows: tuple[int, ...]  # indices into `data` of the rows sent
    labels: tuple[int, ...] | None  # the `label` output, for 200 answers
    error: str = ""


@dataclass
class Rule:
    matches: list[dict[str, Any]]  # HTTPRouteMatch objects; [] = match everything
    backends: list[tuple[str, int]]  # (Service, weight)
    mirrors: list[tuple[str, float]]  # (Service, fraction of requests mirrored)


@dataclass
class Routing:
    rules: list[Rule] = field(default_factory=list)
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)  # ready, by Service
    sources: dict[str, str] = field(default_factory=dict)  # Service -> "slices" or "selector"


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def endpoints_by_selector(service: Any, pods: Iterable[Any]) -> list[Endpoint]:
    """The ready endpoints the EndpointSlice controller computes for `service`: pods matching
    its selector, with an IP, Ready, not terminating, at the Service's (first) target port
    (a port name resolved through the pod's container ports)."""
    selector = service.spec.selector
    if not selector or not service.spec.ports:
        return []
    target = service.spec.ports[0].target_port or service.spec.ports[0].port
    out = []
    for pod in pods:
        labels = pod.metadata.labels or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        if not pod.status.pod_ip or pod.metadata.deletion_timestamp or not _pod_ready(pod):
            continue
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        port: int | None = None
        if isinstance(target, int) or str(target).isdigit():
            port = int(target)
        else:
            for container in pod.spec.containers:
                for p in container.ports or []:
                    if p.name == target:
                        port = p.container_port
        if port is not None:
            out.append(
                Endpoint(service.metadata.name, pod.status.pod_ip, port, pod.metadata.uid or "")
            )
    return sorted(out, key=lambda e: e.ip)


def _path_matches(match: dict[str, Any], path: str) -> bool:
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = spec.get("type", "PathPrefix"), spec.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return re.fullmatch(value, path) is not None
    prefix = value.rstrip("/")
    return prefix in ("", path) or path.startswith(prefix + "/")


def _match_score(
    match: dict[str, Any], path: str, method: str, headers: Mapping[str, str]
) -> tuple[int, int, int, int, int] | None:
    """The Gateway API precedence key of a matching HTTPRouteMatch, None if it does not match."""
    if not _path_matches(match, path):
        return None
    if match.get("method") and match["method"] != method:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for header in match.get("headers") or []:
        got = lowered.get(header["name"].lower())
        if got is None:
            return None
        if header.get("type", "Exact") == "RegularExpression":
            if re.fullmatch(header["value"], got) is None:
                return None
        elif got != header["value"]:
            return None
    if match.get("queryParams"):
        return None  # requests carry no query parameters
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    return (
        int(spec.get("type") == "Exact"),
        len(spec.get("value", "/")) if spec.get("type", "PathPrefix") == "PathPrefix" else 0,
        int(bool(match.get("method"))),
        len(match.get("headers") or []),
        len(match.get("queryParams") or []),
    )


def _mirror_fraction(mirror: dict[str, Any]) -> float:
    if "percent" in mirror:
        return float(mirror["percent"]) / 100.0
    if "fraction" in mirror:
        fraction = mirror["fraction"]
        return float(fraction["numerator"]) / float(fraction.get("denominator", 100))
    return 1.0


def rules_of_httproute(route: dict[str, Any]) -> list[Rule]:
    """The rules of an HTTPRoute, reduced to what routing needs (Services in its namespace)."""
    rules = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        backends = [
            (ref["name"], int(ref.get("weight", 1)))
            for ref in rule.get("backendRefs") or []
            if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")
        ]
        mirrors = [
            (f["requestMirror"]["backendRef"]["name"], _mirror_fraction(f["requestMirror"]))
            for f in rule.get("filters") or []
            if f.get("type") == "RequestMirror"
        ]
        rules.append(Rule(list(rule.get("matches") or []), backends, mirrors))
    return rules


class LoadGenerator:
    """V2 inference traffic at `rate` requests/s for at most `duration` seconds (or
    `max_requests`), routed like a Service (`router="replicas"`: the Service `name`) or an
    HTTPRoute (`router="gatewayAPI"`: the HTTPRoute `route`, default `name`) would route it, to
    /v2/models/<model, default name>/infer. Stops by itself; `stop()` ends it early.

    `set_rate(0)` / `pause()` send nothing until `set_rate(r)` / `resume()`. At most
    `concurrency` requests are in flight (a slow server slows the generator down, as a client
    with a bounded pool would). Call `mark()` to get a time and `results_since(mark)` for the
    requests sent after it.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        data: np.ndarray[Any, Any],
        *,
        router: str = "replicas",
        rate: float = 40.0,
        duration: float = 60.0,
        max_requests: int | None = None,
        max_rows: int = 1,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        concurrency: int = 8,
        refresh: float = 0.5,
        timeout: float = 5.0,
        seed: int = 0,
        selector_fallback: bool = True,
        probe: Callable[[str, str], bool] | None = None,
        route: str | None = None,
    ) -> None:
        if router not in ("replicas", "gatewayAPI"):
            raise ValueError(f"router must be replicas or gatewayAPI, not {router!r}")
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.data = np.asarray(data, dtype=np.float32)
        self.router = router
        self.duration = duration
        self.max_requests = max_requests
        self.max_rows = max_rows
        self.headers = dict(headers or {})
        self.path = f"/v2/models/{model or name}/infer"
        self.route = route or name  # the HTTPRoute's name (router gatewayAPI)
        self.timeout = timeout
        self.refresh = refresh
        self._rate = rate
        self._random = random.Random(seed)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self._discovery = client.DiscoveryV1Api(api)
        self._core = client.CoreV1Api(api)
        self.selector_fallback = selector_fallback
        # The readiness probe of simulated pods (ServingPods.probe_ready): an endpoint whose
        # server is not ready gets no traffic, as with a real kubelet.
        self.probe = probe
        self._custom = client.CustomObjectsApi(api)
        self._routing = Routing()
        self._routed = threading.Event()  # set after the first successful refresh
        self.refresh_errors: list[str] = []
        self._lock = threading.Lock()
        self._results: list[Result] = []
        self._mirrored: list[Result] = []
        self.sent = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"load-{name}")
        self._mirror_pool = ThreadPoolExecutor(2, thread_name_prefix=f"mirror-{name}")
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=self._refresh_loop, name=f"routes-{name}", daemon=True),
            threading.Thread(target=self._dispatch, name=f"dispatch-{name}", daemon=True),
        ]

    # --- control -------------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self._t0 = time.monotonic()
        self._threads[0].start()
        if not self._routed.wait(10):
            raise AssertionError(f"could not read the routing objects: {self.refresh_errors}")
        self._threads[1].start()
        return self

    def stop(self) -> None:
        """Stop sending; wait for the requests in flight."""
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(self.timeout + 10)
        self._pool.shutdown(wait=True)
        self._mirror_pool.shutdown(wait=True)
        for c in self._clients:
            c.close()

    def wait(self, timeout: float | None = None) -> LoadGenerator:
        """Block until the generator is done (duration or max_requests reached), then stop."""
        limit = timeout if timeout is not None else self.duration + self.timeout + 10
        if not self._done.wait(limit):
            raise AssertionError(f"load generator not done after {limit}s ({self.sent} sent)")
        self.stop()
        return self

    def run(self) -> LoadGenerator:
        """start() and wait()."""
        return self.start().wait()

    def set_rate(self, rate: float) -> None:
        self._rate = rate

    def pause(self) -> None:
        self._paused_rate = self._rate
        self._rate = 0.0

    def resume(self) -> None:
        self._rate = getattr(self, "_paused_rate", self._rate) or self._rate

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- results -----------------------------------------------------------------------------
    def mark(self) -> float:
        return time.monotonic() - self._t0

    @property
    def results(self) -> list[Result]:
        with self._lock:
            return list(self._results)

    @property
    def mirrored(self) -> list[Result]:
        with self._lock:
            return list(self._mirrored)

    def results_since(self, mark: float) -> list[Result]:
        return [r for r in self.results if r.t >= mark]

    def counts(self, results: Iterable[Result] | None = None) -> Counter[tuple[str, int]]:
        """(endpoint IP, status) -> requests."""
        return Counter((r.ip, r.status) for r in (self.results if results is None else results))

    def statuses(self, results: Iterable[Result] | None = None) -> Counter[int]:
        return Counter(r.status for r in (self.results if results is None else results))

    def by_ip(self, results: Iterable[Result] | None = None) -> Counter[str]:
        return Counter(r.ip for r in (self.results if results is None else results))

    def by_service(self, results: Iterable[Result] | None = None) -> Counter[str]:
        return Counter(r.service for r in (self.results if results is None else results))

    def by(
        self,
        key: Mapping[str, str] | Callable[[Result], str],
        results: Iterable[Result] | None = None,
    ) -> Counter[str]:
        """Requests grouped by key(result), or by key[ip] for a mapping (e.g. IP -> revision,
        from ServingPods.by_ip()); IPs the mapping does not know count under "?"."""
        fn = key if callable(key) else (lambda r: key.get(r.ip, "?"))
        return Counter(fn(r) for r in (self.results if results is None else results))

    def latencies(self, results: Iterable[Result] | None = None) -> list[float]:
        return [r.latency for r in (self.results if results is None else results)]

    def routing(self) -> Routing:
        with self._lock:
            return self._routing

    # --- routing ---------------------------------------------------------------------------------
    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            try:
                routing = self._read_routing()
                with self._lock:
                    self._routing = routing
                self._routed.set()
            except Exception as e:  # keep the last routing; try again
                self.refresh_errors.append(f"{type(e).__name__}: {e}")
                del self.refresh_errors[:-20]
            self._stop.wait(self.refresh)

    def _read_routing(self) -> Routing:
        if self.router == "replicas":
            rules = [Rule([], [(self.name, 1)], [])]
        else:
            try:
                route = self._custom.get_namespaced_custom_object(
                    GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", self.route,
                    _request_timeout=5,
                )  # fmt: skip
            except client.ApiException as e:
                if e.status != 404:
                    raise
                route = {}
            rules = rules_of_httproute(route)
        wanted = {s for r in rules for s, _ in [*r.backends, *r.mirrors]}
        endpoints, sources = self._endpoints(wanted)
        return Routing(rules, endpoints, sources)

    def _endpoints(self, wanted: set[str]) -> tuple[dict[str, list[Endpoint]], dict[str, str]]:
        """Ready endpoints of each wanted Service, and where they came from ("slices" or
        "selector"), as kube-proxy sees them: from the Service's EndpointSlices when it has
        endpoints there, else (for loopback pod IPs, which the API server refuses in
        EndpointSlices) what the EndpointSlice controller would have written."""
        slices = self._discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=SERVICE_NAME_LABEL, _request_timeout=5
        ).items
        endpoints: dict[str, list[Endpoint]] = {s: [] for s in wanted}
        sources = dict.fromkeys(wanted, "slices")
        listed: set[str] = set()
        for es in slices:
            service = (es.metadata.labels or {}).get(SERVICE_NAME_LABEL)
            if service not in wanted:
                continue
            ports = [p.port for p in es.ports or [] if p.port]
            port = ports[0] if ports else 8080
            for ep in es.endpoints or []:
                listed.add(service)
                ready = ep.conditions.ready if ep.conditions else None
                if ready is False:  # nil means ready (EndpointConditions)
                    continue
                for ip in ep.addresses or []:
                    target = ep.target_ref.uid if ep.target_ref and ep.target_ref.uid else ""
                    item = Endpoint(service, ip, port, target)
                    if item not in endpoints[service]:
                        endpoints[service].append(item)
        missing = wanted - listed
        if missing and self.selector_fallback:
            pods = self._core.list_namespaced_pod(self.namespace, _request_timeout=5).items
            for service in sorted(missing):
                try:
                    svc = self._core.read_namespaced_service(
                        service, self.namespace, _request_timeout=5
                    )
                except client.ApiException as e:
                    if e.status == 404:
                        continue
                    raise
                selected = endpoints_by_selector(svc, pods)
                if selected and all(ipaddress.ip_address(e.ip).is_loopback for e in selected):
                    endpoints[service] = selected
                    sources[service] = "selector"
        if self.probe is not None:
            probe = self.probe
            endpoints = {
                s: [e for e in eps if probe(e.ip, e.pod_uid)] for s, eps in endpoints.items()
            }
        return endpoints, sources

    def _choose_rule(self, routing: Routing) -> Rule | None:
        best: tuple[tuple[int, ...], int] | None = None
        chosen = None
        for i, rule in enumerate(routing.rules):
            for match in rule.matches or [{}]:
                score = _match_score(match, self.path, "POST", self.headers)
                if score is not None and (best is None or (score, -i) > best):
                    best, chosen = (score, -i), rule
        return chosen

    def _pick(self, routing: Routing, service: str) -> Endpoint | None:
        candidates = routing.endpoints.get(service) or []
        return self._random.choice(candidates) if candidates else None

    def _route(self) -> tuple[str, Endpoint | None, int, list[Endpoint]]:
        """(service, endpoint, status if no endpoint, mirror endpoints)."""
        routing = self.routing()
        rule = self._choose_rule(routing)
        if rule is None:
            return "", None, NO_ENDPOINT, []
        weighted = [(s, w) for s, w in rule.backends if w > 0]
        if not weighted:
            return "", None, 500, []
        (service,) = self._random.choices(
            [s for s, _ in weighted], weights=[w for _, w in weighted]
        )
        mirrors = []
        for mirror_service, fraction in rule.mirrors:
            if self._random.random() < fraction:
                ep = self._pick(routing, mirror_service)
                if ep is not None:
                    mirrors.append(ep)
        return service, self._pick(routing, service), NO_ENDPOINT, mirrors

    # --- sending ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            self._dispatch_loop()
        finally:
            self._pool.shutdown(wait=True)
            self._done.set()

    def _dispatch_loop(self) -> None:
        end = self._t0 + self.duration
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= end or (self.max_requests is not None and self.sent >= self.max_requests):
                return
            rate = self._rate
            if rate <= 0:
                self._stop.wait(0.05)
                next_at = time.monotonic()
                continue
            if next_at > now:
                self._stop.wait(min(next_at - now, 0.1))
                continue
            if not self._slots.acquire(timeout=0.1):
                continue
            next_at = max(next_at + 1.0 / rate, time.monotonic() - 1.0)  # no burst after a stall
            n = self._random.randint(1, self.max_rows)
            rows = tuple(self._random.randrange(len(self.data)) for _ in range(n))
            service, ep, no_endpoint_status, mirrors = self._route()
            self.sent += 1
            t = self.mark()
            if ep is None:
                self._record(Result(t, service, "", no_endpoint_status, 0.0, rows, None))
                self._slots.release()
                continue
            self._pool.submit(self._send, ep, rows, t, False)
            for mirror in mirrors:
                self._mirror_pool.submit(self._send, mirror, rows, t, True)

    def _client(self) -> httpx.Client:
        c: httpx.Client | None = getattr(self._local, "client", None)
        if c is None:
            c = httpx.Client(timeout=self.timeout)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def body(self, rows: tuple[int, ...]) -> dict[str, Any]:
        x = self.data[list(rows)]
        return {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.reshape(-1).tolist(),
                }
            ]
        }

    def _send(self, ep: Endpoint, rows: tuple[int, ...], t: float, mirror: bool) -> None:
        start = time.monotonic()
        status, labels, error = CONNECTION_ERROR, None, ""
        try:
            response = self._client().post(
                f"http://{ep.ip}:{ep.port}{self.path}", json=self.body(rows), headers=self.headers
            )
            status = response.status_code
            if status == 200:
                outputs = {o["name"]: o for o in response.json()["outputs"]}
                if "label" in outputs:
                    labels = tuple(int(v) for v in outputs["label"]["data"])
            else:
                error = response.text[:200]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            if not mirror:
                self._slots.release()
        result = Result(t, ep.service, ep.ip, status, time.monotonic() - start, rows, labels, error)
        self._record(result, mirror)

    def _record(self, result: Result, mirror: bool = False) -> None:
        with self._lock:
            (self._mirrored if mirror else self._results).append(result)
