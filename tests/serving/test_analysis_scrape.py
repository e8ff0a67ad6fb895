"""The metric contract end to end: a real `canarium-serve` process answers good and bad
requests, its /metrics is read by the analysis' own parser (and by the podMetrics provider, and
through a real Prometheus by the prometheus provider), and the counts, histograms and class
counts are exactly what was sent."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from canarium.analysis import AnalysisTarget, RevisionMetrics, delta, judge
from canarium.analysis.providers.podmetrics import PodMetricsProvider, parse_metrics
from canarium.analysis.providers.prometheus import PrometheusProvider
from canarium.api import AnalysisSpec
from canarium.api import PrometheusProvider as PrometheusSpec
from canarium_serving import metrics_contract as mc
from canarium_serving.stats import bucket_counts

from .conftest import Models, Server, free_port, infer_body, start_server

pytestmark = pytest.mark.serving

NAMESPACE, DEPLOYMENT = "ml", "iris"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def serve(models_path: Path, name: str, revision: str, role: str, log_dir: Path) -> Server:
    env = {
        "CANARIUM_DEPLOYMENT": DEPLOYMENT,
        "CANARIUM_NAMESPACE": NAMESPACE,
        "CANARIUM_REVISION": revision,
        "CANARIUM_ROLE": role,
        "CANARIUM_MODEL_VERSION": "1",
        "CANARIUM_MODEL_URI": models_path.as_uri(),
        "CANARIUM_MODEL_NAME": name,
    }
    return start_server([], log_dir, env=env)


def scrape(server: Server, revision: str) -> RevisionMetrics:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    sample = parse_metrics(text, deployment=DEPLOYMENT, namespace=NAMESPACE, revision=revision)
    assert sample is not None, text
    assert sample.start_time is not None  # process_start_time_seconds: restart detection
    return sample.metrics


def post(client: httpx.Client, model: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(
        f"/v2/models/{model}/infer", content=content, headers={"content-type": "application/json"}
    )


@dataclass
class Sent:
    good: int
    bad: int
    rows: np.ndarray[Any, Any]
    labels: Counter[str]


def send_iris(server: Server, x: np.ndarray[Any, Any], good: int, bad: int) -> Sent:
    """`good` requests of 1-3 rows each, then `bad` malformed ones (all answered 400)."""
    rows, labels = [], Counter[str]()
    bad_bodies: list[Any] = [
        b"{",
        {"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
        {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    ]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for i in range(good):
            n = 1 + i % 3
            batch = x[(i * 7) % (len(x) - 3) :][:n]
            r = post(c, "iris", infer_body(batch))
            assert r.status_code == 200, r.text
            label = next(o for o in r.json()["outputs"] if o["name"] == "label")
            labels.update(str(v) for v in label["data"])
            rows.append(batch)
        for i in range(bad):
            r = post(c, "iris", bad_bodies[i % len(bad_bodies)])
            assert r.status_code == 400, r.text
    return Sent(good, bad, np.concatenate(rows), labels)


def reference(models_path: Path) -> dict[str, Any]:
    ref_path = models_path.with_name(models_path.name.replace(".onnx", ".reference.json"))
    data: dict[str, Any] = json.loads(ref_path.read_text())
    return data


def expected_cumulative(values: np.ndarray[Any, Any], edges: list[float]) -> dict[float, float]:
    counts = bucket_counts(values.astype(np.float32), edges)
    cum = np.cumsum(counts).astype(float).tolist()
    return dict(zip([*[float(np.float32(e)) for e in edges], math.inf], cum, strict=True))


def assert_cumulative_equal(got: dict[float, float], want: dict[float, float]) -> None:
    """Same counts at the same `le` (labels are rendered with 6-7 significant digits)."""
    assert len(got) == len(want), (got, want)
    for (g_le, g), (w_le, w) in zip(sorted(got.items()), sorted(want.items()), strict=True):
        assert g_le == pytest.approx(w_le, rel=1e-6)
        assert g == w, (g_le, got, want)


def check_iris_window(window: RevisionMetrics, sent: Sent, ref: dict[str, Any]) -> None:
    total = sent.good + sent.bad
    assert window.requests == total
    assert window.errors == sent.bad  # every 4xx is an error
    assert window.latency_buckets[math.inf] == total
    assert {k: v for k, v in window.prediction_classes.items() if v} == {
        ("label", c): float(n) for c, n in sent.labels.items()
    }
    for feature in ref["features"]:
        want = expected_cumulative(sent.rows[:, feature["column"]], feature["edges"])
        assert_cumulative_equal(window.input_feature_buckets[feature["name"]], want)
        ratios = window.reference_input_ratios[feature["name"]]
        fractions = np.cumsum(feature["fractions"]).tolist()
        assert sorted(ratios.values()) == pytest.approx(sorted(min(f, 1.0) for f in fractions))
    classes = next(o for o in ref["outputs"] if o["kind"] == "class")
    for c, frac in zip(classes["classes"], classes["fractions"], strict=True):
        assert window.reference_prediction_class_ratios[("label", str(c))] == pytest.approx(frac)


@pytest.fixture(scope="module")
def canary_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = serve(
        models.iris.model_path, "iris", "iris-c4n", "canary", tmp_path_factory.mktemp("canary")
    )
    yield server
    server.stop()


def test_scrape_parse_matches_what_was_sent(canary_server: Server, models: Models) -> None:
    before = scrape(canary_server, "iris-c4n")
    sent = send_iris(canary_server, models.iris_x, good=60, bad=9)
    after = scrape(canary_server, "iris-c4n")
    window = delta(after, before)
    check_iris_window(window, sent, reference(models.iris.model_path))
    assert window.pods == 1

    # Series of another revision are not this revision's.
    text = httpx.get(canary_server.url + "/metrics").text
    assert parse_metrics(text, deployment=DEPLOYMENT, namespace=NAMESPACE, revision="x") is None

    # The judge on these numbers: 9 of 69 failed, far above 1%.
    analysis = AnalysisSpec.model_validate(
        {
            "minSamples": 50,
            "checks": {"errorRate": {"max": 0.01}, "latencyP99": {"maxMs": 5000}, "dataDrift": {}},
        }
    )
    judgement = judge(analysis, window, None, NOW)
    assert judgement.verdict == "Failed"
    drift = next(m for m in judgement.measurements if m.check == "dataDrift")
    assert "for a reliable PSI" in (drift.reason or ""), judgement.summary
    verdicts = {m.check: m.verdict for m in judgement.measurements}
    assert verdicts["errorRate"] == "Failed"
    assert verdicts["latencyP99"] == "Passed"


def test_regressor_value_histogram(models: Models, tmp_path: Path) -> None:
    server = serve(models.regressor.model_path, "reg", "reg-1", "stable", tmp_path)
    try:
        before = scrape(server, "reg-1")
        values = []
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for i in range(25):
                r = post(c, "reg", infer_body(models.regressor_x[i * 4 : i * 4 + 4]))
                assert r.status_code == 200, r.text
                values.extend(r.json()["outputs"][0]["data"])
        window = delta(scrape(server, "reg-1"), before)
    finally:
        server.stop()
    ref = reference(models.regressor.model_path)
    out = next(o for o in ref["outputs"] if o["kind"] == "value")
    want = expected_cumulative(np.asarray(values, dtype=np.float32), out["edges"])
    assert_cumulative_equal(window.prediction_value_buckets[out["name"]], want)
    assert window.requests == 25
    assert window.errors == 0


class HttpKube:
    """The API server's pod list and pod proxy, answered from real serving processes (the
    kwok-based e2e suite cannot proxy to simulated pods)."""

    def __init__(self, servers: dict[str, Server], revision_hash: str) -> None:
        self.servers = servers
        self.revision_hash = revision_hash

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        selector = kwargs["query"]["labelSelector"]
        if not selector.endswith(f"canarium.dev/revision={self.revision_hash}"):
            return {"items": []}
        return {
            "items": [
                {
                    "metadata": {"name": name, "uid": name},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
                for name in self.servers
            ]
        }

    async def get_text(self, path: str, *, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        pod = path.split("/pods/")[1].split(":", maxsplit=1)[0]
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(self.servers[pod].url + "/metrics")
            response.raise_for_status()
            return response.text


def test_pod_metrics_provider_over_real_servers(
    canary_server: Server, models: Models, tmp_path: Path
) -> None:
    second = serve(models.iris.model_path, "iris", "iris-c4n", "canary", tmp_path)
    try:
        kube = HttpKube({"pod-a": canary_server, "pod-b": second}, "c4n")
        provider = PodMetricsProvider(kube)
        target = AnalysisTarget(NAMESPACE, DEPLOYMENT, "c4n", None, "iris-c4n", None, 30)
        asyncio.run(provider.baseline(target))
        sent_a = send_iris(canary_server, models.iris_x, good=20, bad=2)
        sent_b = send_iris(second, models.iris_x[::-1].copy(), good=13, bad=3)
        result = asyncio.run(provider.measure(target))
    finally:
        second.stop()
    assert result.errors == []
    assert result.canary is not None
    both = Sent(
        sent_a.good + sent_b.good,
        sent_a.bad + sent_b.bad,
        np.concatenate([sent_a.rows, sent_b.rows]),
        sent_a.labels + sent_b.labels,
    )
    check_iris_window(result.canary, both, reference(models.iris.model_path))
    assert result.canary.pods == 2


# ---------------------------------------------------------------------------------------------
# A real Prometheus scraping a real server
# ---------------------------------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


@dataclass
class Scraped:
    prometheus: str
    server: Server


@pytest.fixture
def scraped(models: Models, tmp_path: Path) -> Iterator[Scraped]:
    """A fresh server (its counters start at 0) and a Prometheus scraping it every second."""
    if PROMETHEUS is None:
        if os.environ.get("CANARIUM_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is not installed (make test-deps)")
        pytest.skip("prometheus is not installed (make test-deps installs it)")
    server = serve(models.iris.model_path, "iris", "iris-c4n", "canary", tmp_path / "server")
    port = free_port()
    target = server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: canarium\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("prometheus not ready in 30 s")
        yield Scraped(url, server)
    finally:
        server.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def instant(url: str, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v1/query", params={"query": query}, timeout=5).json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def wait_for(url: str, query: str, done: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = instant(url, query)
        if result and done(float(result[0]["value"][1])):
            return
        time.sleep(0.25)
    raise AssertionError(f"{query}: not there in {seconds} s ({instant(url, query)})")


def test_prometheus_provider_over_real_prometheus(scraped: Scraped, models: Models) -> None:
    prometheus, server = scraped.prometheus, scraped.server
    sel = f'{{namespace="{NAMESPACE}",deployment="{DEPLOYMENT}",revision="iris-c4n"}}'
    # A few scrapes at 0 before the traffic: the window starts flat, at zero.
    wait_for(prometheus, f"count_over_time({mc.MODEL_READY.name}{sel}[1m])", lambda v: v >= 5)
    sent = send_iris(server, models.iris_x, good=80, bad=20)
    wait_for(prometheus, f"sum({mc.REQUESTS.series}{sel})", lambda v: v >= 100)
    time.sleep(1.5)

    provider = PrometheusProvider(PrometheusSpec(address=prometheus))
    target = AnalysisTarget(NAMESPACE, DEPLOYMENT, "c4n", None, "iris-c4n", None, 600)
    result = asyncio.run(provider.measure(target))
    assert result.errors == []
    canary = result.canary
    assert canary is not None
    assert canary.pods == 1
    # increase() extrapolates to the window's end by up to one scrape interval, so counts are a
    # little high; every series starts at 0 in the window and is scaled by the same factor, so
    # ratios are exact. (The 400 series exists at 0 before the first bad request: see
    # canarium_serving.metrics.INITIAL_CODES; otherwise its first increments would be lost.)
    assert 100 <= canary.requests <= 100 * 1.3
    factor = canary.requests / 100
    assert canary.errors == pytest.approx(20 * factor, rel=1e-6)
    assert canary.latency_buckets[math.inf] == pytest.approx(canary.requests, rel=1e-6)
    got_classes = {k: v for k, v in canary.prediction_classes.items() if v}
    want_classes = {("label", c): n * factor for c, n in sent.labels.items()}
    assert got_classes == pytest.approx(want_classes, rel=1e-6)
    ref = reference(models.iris.model_path)
    for feature in ref["features"]:
        want = expected_cumulative(sent.rows[:, feature["column"]], feature["edges"])
        got = canary.input_feature_buckets[feature["name"]]
        assert sorted(got.values()) == pytest.approx(
            [v * factor for v in sorted(want.values())], rel=1e-6
        )
    assert set(canary.reference_input_ratios) == {f["name"] for f in ref["features"]}

    analysis = AnalysisSpec.model_validate(
        {
            "minSamples": 50,
            "provider": {"prometheus": {"address": prometheus}},
            "checks": {
                "errorRate": {"max": 0.01},
                "dataDrift": {"maxPSI": 100},
                "custom": [
                    {
                        "name": "ok-rate",
                        "query": 'sum(rate(canarium_requests_total{namespace="{{namespace}}",'
                        'deployment="{{deployment}}",revision="{{revision}}",role="{{role}}",'
                        'code="200"}[1m]))',
                        "min": 0.01,
                    },
                    {"name": "nothing", "query": "no_such_metric", "max": 1},
                ],
            },
        }
    )
    values = asyncio.run(provider.custom_values(analysis, target))
    assert values["ok-rate"] is not None
    assert values["ok-rate"] > 0
    assert values["nothing"] is None
    judgement = judge(analysis, canary, None, NOW, values)
    verdicts = {m.check: m.verdict for m in judgement.measurements}
    assert verdicts == {
        "samples": "Passed",
        "errorRate": "Failed",
        "dataDrift": "Inconclusive",  # too few live values per bin for a reliable PSI
        "ok-rate": "Passed",
        "nothing": "Inconclusive",
    }
    assert judgement.verdict == "Failed"
