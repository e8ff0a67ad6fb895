"""Inference traffic that goes where Kubernetes sends it.

- router `replicas`: every request goes to the entry Service's ClusterIP, from this machine, and
  kube-proxy on the real node picks the pod (the real EndpointSlices, readiness and all);
- router `gateway`: a real Gateway routes; every request goes to `url` (its listener), and the
  answer's model_version tells which revision answered (Result.service is "gateway"). The
  rollout tests use Traefik (conftest `gateway`);
- router `gatewayAPI`: the generator does a Gateway's routing itself, for the harness's
  mirroring test (a mirrored answer cannot be seen through a real Gateway), from the objects a
  Gateway reads: the HTTPRoute named after
  the ModelDeployment chooses the rule (path, method and header matches, with the Gateway API
  precedence), then a backend Service by the backendRefs' weights, then a ready endpoint of that
  Service's EndpointSlices (written by the real EndpointSlice controller; the pods are real).
  RequestMirror filters send a copy to the mirror backend (its answer is recorded apart, in
  `mirrored`).

Routing objects are re-read every `refresh` seconds on a thread. Requests are V2 infer calls
with FP32 rows drawn from `data` (batch of 1..max_rows), at a bounded rate, for a bounded time
or number of requests; each result keeps the address, the status, the latency, the rows sent,
the labels answered and the model version that answered. A status of 0 is a connection error or
timeout; -1 means there was no ready endpoint (or no route); 500 with no endpoint is a rule
whose backends all weigh 0.
"""

from __future__ import annotations

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
HTTP_PORT_NAME = "http"  # the Services' REST port (canarium.render); the other one is grpc
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"


@dataclass(frozen=True)
class Endpoint:
    service: str
    ip: str
    port: int


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
    version: str = ""  # model_version of a 200 answer: which revision's model answered


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


def _path_matches(match: dict[str, Any], path: str) -> bool:
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = spec.get("type", "PathPrefix"), spec.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return re.fullmatch(value, path) is not None
    prefix = value.rstrip("/")
    return prefix in ("", path) or path.startswith(prefix + "/")


def _header_matches(header: dict[str, Any], got: str | None) -> bool:
    """Whether one HTTPHeaderMatch matches the request's value of that header (None: absent)."""
    if got is None:
        return False
    if header.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(header["value"], got) is not None
    return got == header["value"]


def _headers_match(wanted: list[dict[str, Any]], headers: Mapping[str, str]) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    return all(_header_matches(header, lowered.get(header["name"].lower())) for header in wanted)


def _match_score(
    match: dict[str, Any], path: str, method: str, headers: Mapping[str, str]
) -> tuple[int, int, int, int, int] | None:
    """The Gateway API precedence key of a matching HTTPRouteMatch, None if it does not match."""
    if not _path_matches(match, path):
        return None
    if match.get("method") and match["method"] != method:
        return None
    if not _headers_match(match.get("headers") or [], headers):
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
    HTTPRoute (`router="gatewayAPI"`: the HTTPRoute `route`, default `name`) would route it, or
    through a real Gateway (`router="gateway"`: its listener at `url`, http://host:port), to
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
        route: str | None = None,
        url: str | None = None,
    ) -> None:
        if router not in ("replicas", "gatewayAPI", "gateway"):
            raise ValueError(f"router must be replicas, gatewayAPI or gateway, not {router!r}")
        if (router == "gateway") != (url is not None):
            raise ValueError("router gateway needs a url, and only it takes one")
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
        self.url = httpx.URL(url) if url is not None else None  # the Gateway (router gateway)
        self.timeout = timeout
        self.refresh = refresh
        self._rate = rate
        self._random = random.Random(seed)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self._discovery = client.DiscoveryV1Api(api)
        self._core = client.CoreV1Api(api)
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
        if self.router == "replicas":
            self._wait_reachable()
        self._threads[1].start()
        return self

    def _wait_reachable(self, timeout: float = 20.0) -> None:
        """Until the Service answers at all: kube-proxy programs a Service's endpoints a moment
        after its pods turn Ready (asks the health endpoint: no inference is counted)."""
        (ep,) = self.routing().endpoints[self.name]
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"http://{ep.ip}:{ep.port}/v2/health/ready", timeout=5)
                return
            except httpx.TransportError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} ({ep.ip}) does not answer: {e}") from e
                time.sleep(0.1)

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
        if self.url is not None:
            # A real Gateway routes: one endpoint, its listener.
            ep = Endpoint("gateway", self.url.host, self.url.port or 80)
            return Routing([Rule([], [("gateway", 1)], [])], {"gateway": [ep]}, {})
        if self.router == "replicas":
            # kube-proxy routes: one endpoint, the Service's ClusterIP.
            svc = self._core.read_namespaced_service(self.name, self.namespace, _request_timeout=5)
            # The Service has an http and a grpc port: requests go to the http one.
            (port,) = [p.port for p in svc.spec.ports if p.name == HTTP_PORT_NAME]
            ip = svc.spec.cluster_ip
            rules = [Rule([], [(self.name, 1)], [])]
            return Routing(rules, {self.name: [Endpoint(self.name, ip, port)]}, {})
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
        """Ready endpoints of each wanted Service, from its EndpointSlices, as a Gateway reads
        them (and where they came from: always "slices")."""
        slices = self._discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=SERVICE_NAME_LABEL, _request_timeout=5
        ).items
        endpoints: dict[str, list[Endpoint]] = {s: [] for s in wanted}
        for es in slices:
            service = (es.metadata.labels or {}).get(SERVICE_NAME_LABEL)
            if service not in wanted:
                continue
            # As a Gateway resolves a backendRef's port (80): the Service port named http, then
            # the slice's port of that name (a slice lists its ports in no particular order).
            ports = [p.port for p in es.ports or [] if p.port and p.name == HTTP_PORT_NAME]
            port = ports[0] if ports else 8080
            for ep in es.endpoints or []:
                ready = ep.conditions.ready if ep.conditions else None
                if ready is False:  # nil means ready (EndpointConditions)
                    continue
                for ip in ep.addresses or []:
                    item = Endpoint(service, ip, port)
                    if item not in endpoints[service]:
                        endpoints[service].append(item)
        return endpoints, dict.fromkeys(wanted, "slices")

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
            # A connection per request: kube-proxy balances connections, not requests, so
            # kept-alive connections would pin the split to the pods they first reached.
            c = httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0))
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
        status, labels, error, version = CONNECTION_ERROR, None, "", ""
        try:
            response = self._client().post(
                f"http://{ep.ip}:{ep.port}{self.path}", json=self.body(rows), headers=self.headers
            )
            status = response.status_code
            if status == 200:
                answer = response.json()
                version = str(answer.get("model_version") or "")
                outputs = {o["name"]: o for o in answer["outputs"]}
                if "label" in outputs:
                    labels = tuple(int(v) for v in outputs["label"]["data"])
            else:
                error = response.text[:200]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            if not mirror:
                self._slots.release()
        latency = time.monotonic() - start
        result = Result(t, ep.service, ep.ip, status, latency, rows, labels, error, version)
        self._record(result, mirror)

    def _record(self, result: Result, mirror: bool = False) -> None:
        with self._lock:
            (self._mirrored if mirror else self._results).append(result)
