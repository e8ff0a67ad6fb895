"""The analysis: window deltas, the judge's rules, and both providers' logic
(the podMetrics provider against a fake API client, the prometheus provider against a fake
Prometheus HTTP API)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from canarium.analysis import (
    AnalysisTarget,
    PodSample,
    RevisionMetrics,
    combine,
    delta,
    judge,
    sequential,
    unanswered,
    window,
)
from canarium.analysis.judge import CLEAR_ODDS, CUSTOM_CHECKS_NOT_RUN, _below_floor, _Floor
from canarium.analysis.providers import ProviderContext, ProviderRegistry
from canarium.analysis.providers.podmetrics import PodMetricsProvider
from canarium.analysis.providers.prometheus import (
    PrometheusProvider,
    fill_template,
    parse_answer,
    selector,
)
from canarium.api import AnalysisSpec, Evidence, MetricsProvider
from canarium_serving import metrics_contract as mc

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
INF = math.inf


def spec(checks: dict[str, Any], min_samples: int = 50, **extra: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"minSamples": min_samples, "checks": checks, **extra})


def cumulative(counts: list[float], edges: list[float]) -> dict[float, float]:
    """Per-bucket counts (len(edges) + 1) -> cumulative buckets with +Inf."""
    out, acc = {}, 0.0
    for le, c in zip([*edges, INF], counts, strict=True):
        acc += c
        out[le] = acc
    return out


def metrics(requests: float = 100, errors: float = 0, **kw: Any) -> RevisionMetrics:
    kw.setdefault("latency_buckets", cumulative([requests, 0], [0.01]))
    return RevisionMetrics(requests=requests, errors=errors, pods=1, **kw)


def by_check(judgement: Any) -> dict[str, Any]:
    return {m.check: m for m in judgement.measurements}


# ---------------------------------------------------------------------------------------------
# Deltas and windows
# ---------------------------------------------------------------------------------------------


def test_delta_of_counters_and_histograms() -> None:
    before = RevisionMetrics(
        requests=100,
        errors=5,
        latency_buckets={0.1: 90.0, INF: 100.0},
        prediction_classes={("label", "0"): 60.0, ("label", "1"): 40.0},
        input_feature_buckets={"x": {1.0: 10.0, INF: 100.0}},
        reference_input_ratios={"x": {1.0: 0.5, INF: 1.0}},
        pods=1,
    )
    after = RevisionMetrics(
        requests=150,
        errors=6,
        latency_buckets={0.1: 130.0, INF: 150.0},
        prediction_classes={("label", "0"): 70.0, ("label", "1"): 70.0, ("label", "2"): 5.0},
        input_feature_buckets={"x": {1.0: 30.0, INF: 150.0}},
        reference_input_ratios={"x": {1.0: 0.4, INF: 1.0}},
        pods=1,
    )
    d = delta(after, before)
    assert (d.requests, d.errors) == (50, 1)
    assert d.latency_buckets == {0.1: 40.0, INF: 50.0}
    assert d.prediction_classes == {("label", "0"): 10, ("label", "1"): 30, ("label", "2"): 5}
    assert d.input_feature_buckets == {"x": {1.0: 20.0, INF: 50.0}}
    assert d.reference_input_ratios == after.reference_input_ratios  # gauges, not deltas
    assert delta(after, None) == after


def test_delta_counts_a_reset_counter_from_zero() -> None:
    before = RevisionMetrics(
        requests=100, errors=10, latency_buckets={0.1: 100.0, INF: 100.0}, pods=1
    )
    after = RevisionMetrics(requests=30, errors=1, latency_buckets={0.1: 20.0, INF: 30.0}, pods=1)
    d = delta(after, before)
    assert (d.requests, d.errors) == (30, 1)
    assert d.latency_buckets == {0.1: 20.0, INF: 30.0}
    # One class counter reset (went down): that one counts from zero, never negative.
    d2 = delta(
        RevisionMetrics(prediction_classes={("o", "a"): 3.0, ("o", "b"): 50.0}),
        RevisionMetrics(prediction_classes={("o", "a"): 10.0, ("o", "b"): 40.0}),
    )
    assert d2.prediction_classes == {("o", "a"): 3.0, ("o", "b"): 10.0}


def sample(pod: str, requests: float, errors: float = 0, start: float = 1000.0) -> PodSample:
    return PodSample(
        pod,
        RevisionMetrics(
            requests=requests,
            errors=errors,
            latency_buckets={0.1: requests, INF: requests},
            pods=1,
        ),
        start_time=start,
    )


def test_window_with_pods_coming_going_and_restarting() -> None:
    before = {"a": sample("a", 100, 1), "b": sample("b", 200, 2), "c": sample("c", 50)}
    after = {
        "a": sample("a", 130, 1),  # +30
        # b is gone: its increments since the last scrape are lost, nothing negative
        "c": sample("c", 80, 0, start=2000.0),  # restarted and already past its old count: 80
        "d": sample("d", 7, 7),  # new pod: from zero
    }
    w = window(after, before)
    assert w.requests == 30 + 80 + 7
    assert w.errors == 0 + 0 + 7
    assert w.pods == 3
    assert w.latency_buckets == {0.1: 117.0, INF: 117.0}
    assert window({}, before).requests == 0
    assert combine([]).pods == 0


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------


def test_passes_within_all_thresholds() -> None:
    a = spec({"errorRate": {"max": 0.05}, "latencyP99": {"maxMs": 50}})
    j = judge(a, metrics(requests=100, errors=4), metrics(requests=900, errors=30), NOW)
    assert j.verdict == "Passed", j.summary
    m = by_check(j)
    assert m["samples"].verdict == "Passed"
    assert m["samples"].threshold == ">= 50"
    # 4% against 3.33%: the ratio of the rates, not the canary's rate, is the value.
    assert m["errorRate"].value == pytest.approx(1.2)
    assert m["errorRate"].threshold == "ratio <= 1.5 vs stable, rate <= 0.05"
    assert m["errorRate"].reason.startswith("canary 4% (4/100), stable 3.333% (30/900); ratio 1.2")
    assert m["errorRate"].reason.endswith(": not shown worse than 1.5x stable")
    assert m["latencyP99"].threshold == "slow ratio <= 2 vs stable, p99 <= 50 ms"
    assert all(x.time == NOW for x in j.measurements)
    assert j.summary.startswith("Passed")
    evidence = {e.check: e for e in j.evidence}
    assert set(evidence) == {"errorRate", "latencyP99"}
    e = evidence["errorRate"]
    assert (e.canary_requests, e.canary_events, e.stable_requests, e.stable_events) == (
        100,
        4,
        900,
        30,
    )
    assert (e.guard_requests, e.guard_events, e.max_ratio, e.decision) == (100, 4, 1.5, None)
    assert e.ratio_lower is not None
    assert e.ratio_upper is not None
    assert e.ratio_lower < 1.2 < e.ratio_upper


def test_error_rate_fails_when_shown_worse_than_stable_and_counts_4xx() -> None:
    """Every non-2xx answer is an error (the providers count 4xx, see the provider tests):
    what fails is a canary that errs more than maxRatio times as often as stable."""
    a = spec({"errorRate": {}})  # maxRatio 1.5 by default
    j = judge(a, metrics(requests=200, errors=20), metrics(requests=800, errors=8), NOW)
    assert j.verdict == "Failed"
    m = by_check(j)["errorRate"]
    assert (m.verdict, m.value, m.threshold) == ("Failed", 10.0, "ratio <= 1.5 vs stable")
    assert m.reason.startswith("canary 10% (20/200), stable 1% (8/800); ratio 10, 99% interval [")
    assert m.reason.endswith("]: shown worse than 1.5x stable")
    assert "errorRate" in j.summary
    (e,) = j.evidence
    assert e.decision == "Failed"
    assert e.ratio_lower is not None
    assert e.ratio_lower > 1.5
    # The same 10% of errors when stable has them as often (a client sending bad inputs to
    # both): nothing against the canary.
    j = judge(a, metrics(requests=200, errors=20), metrics(requests=800, errors=80), NOW)
    assert j.verdict == "Passed", j.summary
    assert by_check(j)["errorRate"].value == pytest.approx(1.0)


def test_too_few_samples_holds_a_pass_but_not_a_statistical_failure() -> None:
    a = spec({"errorRate": {}, "latencyP99": {}}, min_samples=50)
    # Stable errs often enough that the window alone would pass (see test_analysis_holds.py).
    j = judge(a, metrics(requests=12, errors=0), metrics(requests=500, errors=50), NOW)
    assert j.verdict == "Inconclusive"
    m = by_check(j)
    assert m["samples"].reason == "12 requests < minSamples 50"
    assert m["samples"].value == 12
    assert m["errorRate"].verdict == "Inconclusive"
    assert m["errorRate"].value == 0.0  # still reported: no error against stable's 10%
    assert m["errorRate"].reason.startswith("12 requests < minSamples 50 (canary 0% (0/12)")
    assert m["latencyP99"].verdict == "Inconclusive"
    assert "12 requests < minSamples 50" in j.summary
    # The evidence still accumulates in a small window.
    assert {e.check: e.canary_requests for e in j.evidence} == {"errorRate": 12, "latencyP99": 0}
    # 12 errors of 12 against none of 1000: shown worse, however small the window.
    j = judge(a, metrics(requests=12, errors=12), metrics(requests=1000), NOW)
    assert j.verdict == "Failed"
    m = by_check(j)
    assert m["samples"].verdict == "Inconclusive"
    assert m["errorRate"].verdict == "Failed"
    assert m["errorRate"].reason.endswith("shown worse than 1.5x stable")
    assert "12 requests" not in m["errorRate"].reason


LATENCY_EDGES = [0.1, 0.2, 0.5, 1.0]


def latency(counts: list[float]) -> dict[float, float]:
    """A latency histogram over LATENCY_EDGES from per-bucket counts (5 with +Inf)."""
    return cumulative(counts, LATENCY_EDGES)


@pytest.mark.parametrize("canary", [None, RevisionMetrics()])
def test_no_data_is_inconclusive(canary: RevisionMetrics | None) -> None:
    a = spec({"errorRate": {"max": 0.01}, "predictionDrift": {}})
    j = judge(a, canary, None, NOW)
    assert j.verdict == "Inconclusive"
    assert all(m.verdict == "Inconclusive" for m in j.measurements)
    assert by_check(j)["samples"].reason == "no canary metrics in this window"
    assert j.summary == "Inconclusive: samples: no canary metrics in this window"


def test_latency_check() -> None:
    a = spec({"latencyP99": {}})  # maxRatio 2
    # Stable: 99 of 100 within 500 ms: its p99 bucket bound, the slow bound, is 500 ms.
    stable = metrics(requests=1000, latency_buckets=latency([500, 400, 90, 10, 0]))
    fast = metrics(requests=1000, latency_buckets=latency([500, 400, 90, 10, 0]))
    first = judge(a, fast, stable, NOW)
    m = by_check(first)["latencyP99"]
    assert (m.verdict, m.value) == ("Passed", None)
    assert m.reason == (
        "stable's p99 bound 500 ms taken: slow requests are compared from the next interval on"
    )
    (e,) = first.evidence
    assert (e.slow_seconds, e.canary_requests) == (0.5, 0)
    # From the next interval on: 1% of stable's requests are slow; a canary with 10% is
    # 10 times as slow, more than twice: shown worse.
    slow = metrics(requests=1000, latency_buckets=latency([500, 300, 100, 60, 40]))
    j = judge(a, slow, stable, NOW, evidence=first.evidence)
    m = by_check(j)["latencyP99"]
    assert (m.verdict, m.value) == ("Failed", pytest.approx(10.0))
    assert m.reason.startswith("canary 10% (100/1000), stable 1% (10/1000)")
    assert m.reason.endswith("shown worse than 2x stable")
    (e,) = j.evidence
    assert (e.canary_requests, e.canary_events, e.stable_requests, e.stable_events) == (
        1000,
        100,
        1000,
        10,
    )
    # The same shape as stable's passes, and says which requests are slow.
    m = by_check(judge(a, fast, stable, NOW, evidence=first.evidence))["latencyP99"]
    assert m.verdict == "Passed"
    assert m.reason.startswith("slow: over 500 ms; canary 1% (10/1000), stable 1% (10/1000)")
    # No histogram: inconclusive, the bound still unknown.
    m = by_check(judge(a, metrics(latency_buckets={}), metrics(requests=10), NOW))["latencyP99"]
    assert m.verdict == "Inconclusive"


def test_latency_with_skewed_bucket_counts_judges_the_monotonic_histogram() -> None:
    """Prometheus' `increase()` per bucket can leave a higher bucket a little below a lower one.
    The slow requests are counted on the counts made monotonic (as histogram_quantile does):
    a skewed bucket makes no slow requests up."""
    a = spec({"latencyP99": {}})
    stable = metrics(requests=1000, latency_buckets={0.1: 500.0, 0.2: 990.0, INF: 1000.0})
    first = judge(a, stable, stable, NOW)
    assert [e.slow_seconds for e in first.evidence] == [0.2]
    # 1000 observations up to 100 ms; the 200 ms bucket's increase came out as 980.
    skewed = metrics(requests=1000, latency_buckets={0.1: 1000.0, 0.2: 980.0, INF: 1000.0})
    j = judge(a, skewed, stable, NOW, evidence=first.evidence)
    (e,) = j.evidence
    assert (e.canary_requests, e.canary_events) == (1000, 0)
    # The slow bound is taken from a skewed histogram the same way: the lowest bound with
    # 99% at or below it once monotonic (100 ms here, not the 200 ms the raw counts say).
    skewed_stable = metrics(
        requests=1000, latency_buckets={0.1: 995.0, 0.2: 980.0, 0.5: 999.0, INF: 1000.0}
    )
    assert [e.slow_seconds for e in judge(a, skewed, skewed_stable, NOW).evidence] == [0.1]


def classes(counts: dict[str, float], output: str = "label") -> dict[tuple[str, str], float]:
    return {(output, c): n for c, n in counts.items()}


def test_prediction_drift_of_classifiers() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    stable = metrics(requests=10000, prediction_classes=classes({"0": 5000, "1": 5000}))
    same = metrics(requests=10000, prediction_classes=classes({"0": 5000, "1": 5000}))
    shifted = metrics(requests=10000, prediction_classes=classes({"0": 2500, "1": 7500}))
    assert judge(a, same, stable, NOW).verdict == "Passed"
    j = judge(a, shifted, stable, NOW)
    m = by_check(j)["predictionDrift"]
    assert m.verdict == "Failed"
    assert m.value == pytest.approx(0.274653, abs=1e-6)
    assert m.threshold == "PSI <= 0.2"
    (e,) = j.evidence
    assert (e.check, e.decision, e.looks) == ("predictionDrift", "Failed", 1)
    # The same PSI over 100 predictions is within what noise around 0.2 gives: not shown,
    # but above maxPSI, so it holds for more predictions (it does not pass).
    few = metrics(prediction_classes=classes({"0": 25, "1": 75}))
    m = by_check(judge(a, few, metrics(prediction_classes=classes({"0": 50, "1": 50})), NOW))[
        "predictionDrift"
    ]
    assert (m.verdict, m.value) == ("Inconclusive", pytest.approx(0.274653, abs=1e-6))
    assert m.reason.endswith("(look 1): holding for more evidence")
    # A class only the canary predicts counts against it (floored at epsilon for stable).
    new_class = metrics(prediction_classes=classes({"0": 50, "1": 40, "2": 10}))
    stable = metrics(prediction_classes=classes({"0": 50, "1": 50}))
    value = by_check(judge(spec({"predictionDrift": {"maxPSI": 0.2}}), new_class, stable, NOW))[
        "predictionDrift"
    ].value
    # stable 0.5 | 0.5 | 0 -> 1e-4, canary 0.5 | 0.4 | 0.1:
    # 0 + (0.4 - 0.5) ln(0.4/0.5) + (0.1 - 1e-4) ln(0.1/1e-4) = 0.1 ln 1.25 + 0.0999 ln 1000
    assert value == pytest.approx(0.712399, abs=1e-6)


def test_prediction_drift_needs_enough_stable_samples() -> None:
    a = spec({"predictionDrift": {}}, min_samples=50)
    canary = metrics(prediction_classes=classes({"0": 100}))
    few = RevisionMetrics(requests=10, prediction_classes=classes({"1": 10}))
    m = by_check(judge(a, canary, few, NOW))["predictionDrift"]
    assert m.verdict == "Inconclusive"
    assert "stable has 10 requests < minSamples 50" in m.reason
    assert by_check(judge(a, canary, None, NOW))["predictionDrift"].verdict == "Inconclusive"
    # No prediction metrics at all: inconclusive.
    m = by_check(judge(a, metrics(), metrics(), NOW))["predictionDrift"]
    assert m.verdict == "Inconclusive"


def test_prediction_drift_of_regressors_with_different_edges() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.1}})
    stable = metrics(
        prediction_value_buckets={"variable": cumulative([250, 250, 250, 250], [0, 1, 2])}
    )
    # Same distribution, other edges (uniform within [0, 2]): interpolation keeps it equal.
    canary = metrics(
        prediction_value_buckets={
            "variable": cumulative([250, 125, 250, 125, 250], [0, 0.5, 1.5, 2])
        }
    )
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    assert m.verdict == "Passed"
    assert m.value == pytest.approx(0.0, abs=1e-9)
    moved = metrics(prediction_value_buckets={"variable": cumulative([0, 0, 100, 900], [0, 1, 2])})
    assert judge(a, moved, stable, NOW).verdict == "Failed"
    apart = metrics(prediction_value_buckets={"variable": cumulative([50, 50], [100])})
    m = by_check(judge(a, apart, stable, NOW))["predictionDrift"]
    assert m.verdict == "Inconclusive"
    assert "do not overlap" in m.reason


def test_data_drift_against_reference() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.2}})
    ref = {"x": cumulative([0.5, 0.5], [1.0]), "y": cumulative([0.5, 0.5], [3.0])}
    live_ok = {"x": cumulative([2000, 2000], [1.0]), "y": cumulative([1900, 2100], [3.0])}
    live_bad = {"x": cumulative([2000, 2000], [1.0]), "y": cumulative([1000, 3000], [3.0])}
    ok = metrics(reference_input_ratios=ref, input_feature_buckets=live_ok)
    bad = metrics(reference_input_ratios=ref, input_feature_buckets=live_bad)
    assert judge(a, ok, None, NOW).verdict == "Passed"
    m = by_check(judge(a, bad, None, NOW))["dataDrift"]
    assert m.verdict == "Failed"
    assert m.value == pytest.approx(0.274653, abs=1e-6)
    assert "'y'" in m.reason
    no_ref = by_check(judge(a, metrics(), None, NOW))["dataDrift"]
    assert no_ref.verdict == "Inconclusive"
    assert "reference" in no_ref.reason


def test_custom_checks() -> None:
    prom = {"prometheus": {"address": "http://prometheus:9090"}}
    a = spec(
        {
            "custom": [
                {"name": "accuracy", "query": "q1", "min": 0.9},
                {"name": "queue", "query": "q2", "min": 0, "max": 10},
                {"name": "empty", "query": "q3", "max": 1},
            ]
        },
        provider=prom,
    )
    canary = metrics()
    j = judge(a, canary, None, NOW, {"accuracy": 0.95, "queue": 3.0, "empty": None})
    m = by_check(j)
    assert m["accuracy"].verdict == "Passed"
    assert m["accuracy"].threshold == ">= 0.9"
    assert m["queue"].threshold == ">= 0 and <= 10"
    assert m["empty"].verdict == "Inconclusive"
    assert j.verdict == "Inconclusive"
    j = judge(a, canary, None, NOW, {"accuracy": 0.5, "queue": 3.0})
    assert j.verdict == "Failed"  # a failure wins over an inconclusive check
    assert by_check(j)["accuracy"].reason == "0.5 < min 0.9"
    assert by_check(judge(a, canary, None, NOW, {"queue": 11.0}))["queue"].verdict == "Failed"
    # podMetrics cannot run PromQL.
    pod = spec({"custom": [{"name": "accuracy", "query": "q", "min": 0.9}]})
    m = by_check(judge(pod, canary, None, NOW))["accuracy"]
    assert (m.verdict, m.reason) == ("Inconclusive", CUSTOM_CHECKS_NOT_RUN)


def test_an_unanswered_window_holds_every_check_as_no_data() -> None:
    """The provider ran (custom checks included) but gave no answer in time: each custom check
    has no data, not the "custom checks need the prometheus provider" of a podMetrics spec;
    the evidence gathered so far stays as it was."""
    a = spec(
        {"errorRate": {"max": 0.01}, "custom": [{"name": "accuracy", "query": "q", "min": 0.9}]},
        provider={"prometheus": {"address": "http://prometheus:9090"}},
    )
    before = judge(a, metrics(requests=100, errors=1), metrics(requests=900, errors=9), NOW)
    w = unanswered(NOW, 30)
    assert w.result is not None
    assert (w.time, w.result.canary, w.result.stable, w.custom) == (NOW, None, None, {})
    j = judge(a, w.result.canary, w.result.stable, w.time, w.custom, w.no_data, before.evidence)
    m = by_check(j)
    assert j.verdict == "Inconclusive"
    assert m["samples"].reason == "the metrics provider gave no answer within 30s"
    assert (m["accuracy"].verdict, m["accuracy"].reason) == (
        "Inconclusive",
        "no data (the query returned nothing)",
    )
    assert m["errorRate"].verdict == "Inconclusive"
    assert j.evidence == before.evidence


def test_failed_beats_inconclusive_and_measurements_fit_the_status() -> None:
    a = spec({"errorRate": {"max": 0.01}, "predictionDrift": {}, "dataDrift": {}})
    j = judge(a, metrics(requests=100, errors=50), None, NOW)
    assert j.verdict == "Failed"
    for m in j.measurements:
        assert m.value is None or math.isfinite(m.value)
        m.to_dict()  # valid status


def test_min_samples_requests_are_enough_to_judge() -> None:
    a = spec({"errorRate": {"max": 0.05}}, min_samples=50)
    j = judge(a, metrics(requests=50, errors=1), None, NOW)
    assert j.verdict == "Passed"
    m = by_check(j)["samples"]
    assert (m.verdict, m.value, m.reason) == ("Passed", 50, "50 requests >= 50")
    assert j.summary == "Passed: 1 checks passed (50 requests >= 50)"


def test_a_hold_keeps_the_reason_the_check_would_have_given() -> None:
    a = spec({"errorRate": {}}, min_samples=50)
    m = by_check(judge(a, metrics(requests=12, errors=0), metrics(requests=100, errors=10), NOW))[
        "errorRate"
    ]
    assert m.reason == (
        "12 requests < minSamples 50 (canary 0% (0/12), stable 10% (10/100); ratio 0, "
        "99% interval [0, 7.153]: not shown worse than 1.5x stable)"
    )
    # A check that holds on its own says why, without the minSamples prefix.
    m = by_check(judge(a, metrics(requests=12, errors=0), metrics(requests=100, errors=1), NOW))[
        "errorRate"
    ]
    assert m.verdict == "Inconclusive"
    assert m.reason == (
        "canary 0% (0/12), stable 1% (1/100); ratio 0, 99% interval [0, inf]: not yet 3 times "
        "likelier within 1.5x stable than at twice that: holding for more evidence"
    )


def test_summaries_name_the_checks_behind_the_verdict() -> None:
    a = spec({"errorRate": {}, "latencyP99": {}})
    stable = metrics(requests=1000, errors=10)
    assert judge(a, metrics(requests=100), stable, NOW).summary == (
        "Passed: 2 checks passed (100 requests >= 50)"
    )
    # Failed: only the failed checks, not the latency check that passed.
    failed = judge(a, metrics(requests=200, errors=20), metrics(requests=800, errors=8), NOW)
    assert failed.summary.startswith("Failed: errorRate: canary 10% (20/200), stable 1% (8/800)")
    assert "latencyP99" not in failed.summary
    # Too few samples: that alone is the reason, not every check it held.
    drift = spec({"errorRate": {}, "predictionDrift": {}})
    assert judge(drift, metrics(requests=12), stable, NOW).summary == (
        "Inconclusive: samples: 12 requests < minSamples 50"
    )
    # Enough samples: the inconclusive checks, and only those.
    assert judge(drift, metrics(requests=100), None, NOW).summary == (
        "Inconclusive: predictionDrift: no stable metrics to compare with"
    )
    both = spec({"predictionDrift": {}, "dataDrift": {}})
    assert judge(both, metrics(requests=100), None, NOW).summary == (
        "Inconclusive: predictionDrift: no stable metrics to compare with; "
        "dataDrift: the model has no reference input statistics"
    )


def test_measured_values_keep_six_significant_digits() -> None:
    a = spec({"errorRate": {}})
    j = judge(a, metrics(requests=300, errors=100), metrics(requests=100, errors=10), NOW)
    m = by_check(j)["errorRate"]
    assert m.value == 3.33333  # (100/300) / (10/100)
    assert m.reason.startswith("canary 33.33% (100/300), stable 10% (10/100); ratio 3.333, ")
    (e,) = j.evidence
    assert e.ratio == 3.33333
    for bound in (e.ratio_lower, e.ratio_upper):
        assert bound is not None
        assert bound == float(f"{bound:.6g}")


def test_error_rate_of_a_single_request() -> None:
    """One error in one request is no evidence that the canary is worse: it does not fail
    (it did, at once, with a fixed threshold); but it leans worse, so it holds for more
    requests rather than pass."""
    a = spec({"errorRate": {}}, min_samples=1)
    m = by_check(judge(a, metrics(requests=1, errors=1), metrics(requests=1000, errors=10), NOW))[
        "errorRate"
    ]
    assert (m.verdict, m.value) == ("Inconclusive", 100.0)
    assert m.reason.startswith("canary 100% (1/1), stable 1% (10/1000); ratio 100, ")
    assert m.reason.endswith(
        ": leaning worse than 1.5x stable, not shown yet: holding for more evidence"
    )


def test_error_rate_without_requests_is_inconclusive() -> None:
    a = spec({"errorRate": {}}, min_samples=1)
    # Latency series but no request counted in the window.
    canary = RevisionMetrics(latency_buckets={0.1: 0.0, INF: 0.0}, pods=1)
    j = judge(a, canary, metrics(requests=100, errors=1), NOW)
    m = by_check(j)["errorRate"]
    assert (m.verdict, m.value) == ("Inconclusive", None)
    assert m.reason == (
        "no canary requests (no paired requests yet: not shown worse than 1.5x stable)"
    )
    (e,) = j.evidence
    assert (e.canary_requests, e.stable_requests) == (0, 0), "stable alone is not compared"


def test_latency_with_rare_slow_requests_passes_once_under_one_percent_is_shown() -> None:
    """A load spike in the interval the slow bound comes from sets it far above the real p99
    (CI: 25 ms), so slow requests become rare (canary 1/4945, stable 2/5142) and the ratio test,
    which learns only from them, cannot tell the tolerance from twice it for a long time. The
    canary's slow share shown under 1% (its p99 within the bound) lets the step pass; a share
    near 1%, or one leaning worse than stable's, still holds."""
    a = spec({"latencyP99": {}})
    spike = metrics(requests=1000, latency_buckets=latency([0, 0, 0, 995, 5]))
    first = judge(a, spike, spike, NOW)
    assert [e.slow_seconds for e in first.evidence] == [1.0]

    def step(canary_slow: float, stable_slow: float, n: float = 5000) -> Any:
        canary = metrics(
            requests=n, latency_buckets=latency([n - canary_slow, 0, 0, 0, canary_slow])
        )
        stable = metrics(
            requests=n, latency_buckets=latency([n - stable_slow, 0, 0, 0, stable_slow])
        )
        return by_check(judge(a, canary, stable, NOW, evidence=first.evidence))["latencyP99"]

    m = step(1, 2)
    assert m.verdict == "Passed"
    assert m.reason == (
        "slow: over 1000 ms; canary 0.02% (1/5000), stable 0.04% (2/5000); ratio 0.5, 99% "
        f"interval [{m.reason.split('[')[1].split(']')[0]}]: not shown worse than 2x stable; "
        "under 1% of canary requests shown slow: its p99 is within that bound"
    )
    # Without the floor, the same counts hold: likelier within 2x than at twice that, but not
    # yet 3 times.
    e = first.evidence[0].model_copy(deep=True)
    e.canary_requests, e.canary_events, e.stable_requests, e.stable_events = 5000, 1, 5000, 2
    e.log_likelihood = sequential.add_interval(e.log_likelihood, 2.0, (5000, 1), (5000, 2))
    shown = sequential.ratio_evidence(e.log_likelihood, 2.0, 0.01)
    assert shown.log_lr_double > -math.log(CLEAR_ODDS)
    # 1 in 800: likelier under 1% than at it, but not shown at alpha (0.01): unclear, held.
    m = step(1, 1, n=800)
    assert (m.verdict, m.reason.endswith("holding for more evidence")) == ("Inconclusive", True)
    assert 0 < sequential.rate_below_limit(1, 800, 0.01) < math.log(1 / 0.01)
    # Rare, but leaning worse than twice stable's: held for more evidence, never let through.
    m = step(3, 0)
    assert m.verdict == "Inconclusive"
    assert "leaning worse than 2x stable" in m.reason


def test_the_latency_floor_counts_the_bake_and_is_shown_at_alpha() -> None:
    """The canary's requests with no stable beside them (weight 100, the bake) count towards
    the floor; it is shown at 1/alpha exactly (1 slow in 860: e-value e^4.86, between 100 and
    200)."""
    floor = _Floor(0.01, 0.01, "")
    paired_and_bake = Evidence(
        check="latencyP99", canary_requests=300, unpaired_requests=560, unpaired_events=1
    )
    assert math.log(100) < sequential.rate_below_limit(1, 860, 0.01) < math.log(200)
    assert _below_floor(paired_and_bake, floor)
    # 1 slow among 400 paired and 1 among 400 in the bake: 2 in 800, not shown.
    both = Evidence(
        check="latencyP99",
        canary_requests=400,
        canary_events=1,
        unpaired_requests=400,
        unpaired_events=1,
    )
    assert not _below_floor(both, floor)
    assert not _below_floor(both, None)


def test_rate_below_limit_is_an_e_value_against_at_least_the_limit() -> None:
    # Far fewer events than the limit allows: shown below it; about as many: not.
    assert sequential.rate_below_limit(1, 5000, 0.01) > 40
    assert sequential.rate_below_limit(50, 5000, 0.01) < 0
    assert sequential.rate_below_limit(0, 0, 0.01) == -math.inf
    # One request with no event is evidence already, a little: e^(0.01 (1 - 1.25^-j)) each.
    assert 0 < sequential.rate_below_limit(0, 1, 0.01) < 0.01
    assert sequential.rate_below_limit(0, 100, 0.0) == -math.inf
    # Each alternative's likelihood ratio has expectation at most 1 at the limit (Poisson):
    # sum over k of P(k) * exp(-k t + n p (1 - e^-t)) = 1 exactly, so the mixture's is 1 too.
    n, p = 300, 0.01
    mean = n * p
    expectation = sum(
        math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1))
        * math.exp(sequential.rate_below_limit(k, n, p))
        for k in range(60)
    )
    assert expectation == pytest.approx(1.0, rel=1e-6)


def test_latency_reasons_and_boundaries() -> None:
    a = spec({"latencyP99": {}})
    # Stable with fewer than 100 requests in the window: no bound yet.
    m = by_check(judge(a, metrics(requests=100), metrics(requests=99), NOW))["latencyP99"]
    assert (m.verdict, m.value) == ("Passed", None)
    assert m.reason == "no stable p99 yet (stable needs 100 requests in a window)"
    m = by_check(judge(a, metrics(latency_buckets={}), metrics(requests=99), NOW))["latencyP99"]
    assert (m.verdict, m.value) == ("Inconclusive", None)
    assert m.reason == (
        "no canary latency observations; no stable p99 yet (stable needs 100 requests in a window)"
    )
    # 99 of 100 within 10 ms: the p99 bound is that bucket's, 10 ms, not the one above.
    edge = metrics(requests=100, latency_buckets={0.01: 99.0, 0.02: 100.0, INF: 100.0})
    assert [e.slow_seconds for e in judge(a, metrics(), edge, NOW).evidence] == [0.01]
    # 98 of 100: the next bound.
    below = metrics(requests=100, latency_buckets={0.01: 98.0, 0.02: 100.0, INF: 100.0})
    assert [e.slow_seconds for e in judge(a, metrics(), below, NOW).evidence] == [0.02]
    # The p99 above the highest finite bound: that bound.
    top = metrics(requests=100, latency_buckets={0.01: 90.0, 0.02: 95.0, INF: 100.0})
    assert [e.slow_seconds for e in judge(a, metrics(), top, NOW).evidence] == [0.02]


def test_prediction_drift_judges_from_min_samples_stable_requests() -> None:
    a = spec({"predictionDrift": {}}, min_samples=50)
    stable = metrics(requests=50, prediction_classes=classes({"0": 25, "1": 25}))
    canary = metrics(requests=50, prediction_classes=classes({"0": 25, "1": 25}))
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    assert (m.verdict, m.value) == ("Passed", 0.0)
    # 50 predictions on each side: an effective sample of 50 * 50 / 100 = 25, one look.
    allowed = sequential.psi_critical(0.2, 25, 2, sequential.look_alpha(0.01, 1))
    assert m.reason == (
        f"vs stable, output 'label' PSI 0, at most {allowed:.4g} allowed for maxPSI 0.2 with 25 "
        "observations (look 1)"
    )
    m = by_check(judge(a, canary, None, NOW))["predictionDrift"]
    assert m.reason == "no stable metrics to compare with"
    m = by_check(judge(a, metrics(), metrics(), NOW))["predictionDrift"]
    assert (m.verdict, m.reason) == ("Inconclusive", "no canary predictions in this window")


def test_prediction_drift_of_a_class_the_canary_never_predicts() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    stable = metrics(prediction_classes=classes({"0": 50, "1": 50}))
    canary = metrics(prediction_classes=classes({"0": 100}))
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    # stable 0.5 | 0.5, canary 1 | 0 -> 1e-4: (1 - 0.5) ln 2 + (1e-4 - 0.5) ln(1e-4 / 0.5)
    # = 0.346574 + 4.257745 = 4.604318, six significant digits in the status
    assert (m.verdict, m.value) == ("Failed", 4.60432)


def test_prediction_drift_without_predictions_on_one_side_is_inconclusive() -> None:
    a = spec({"predictionDrift": {}})
    stable = metrics(prediction_classes=classes({"0": 50, "1": 50}))
    silent = metrics(prediction_classes=classes({"0": 0}))
    m = by_check(judge(a, silent, stable, NOW))["predictionDrift"]
    assert (m.verdict, m.reason) == ("Inconclusive", "no canary predictions in this window")
    m = by_check(judge(a, stable, silent, NOW))["predictionDrift"]
    assert (m.verdict, m.reason) == ("Inconclusive", "no stable predictions in this window")
    hist = {"score": cumulative([50, 50], [1.0])}
    regressor = metrics(prediction_value_buckets=hist)
    m = by_check(judge(a, metrics(), regressor, NOW))["predictionDrift"]
    assert m.reason == "no canary predictions in this window"
    silent_regressor = metrics(prediction_value_buckets={"score": cumulative([0, 0], [1.0])})
    m = by_check(judge(a, silent_regressor, regressor, NOW))["predictionDrift"]
    assert m.reason == "no canary predictions in this window"
    m = by_check(judge(a, regressor, metrics(), NOW))["predictionDrift"]
    assert m.reason == "no stable predictions in this window"


def test_prediction_drift_of_a_single_prediction_is_too_few_not_none() -> None:
    a = spec({"predictionDrift": {}})
    many = metrics(prediction_classes=classes({"0": 50, "1": 50}))
    one = metrics(prediction_classes=classes({"0": 1}))
    none = metrics(prediction_classes=classes({"0": 0}))
    m = by_check(judge(a, one, many, NOW))["predictionDrift"]
    assert (
        m.reason
        == "1 canary predictions of 'label' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )
    m = by_check(judge(a, many, one, NOW))["predictionDrift"]
    assert (
        m.reason
        == "1 stable predictions of 'label' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )
    m = by_check(judge(a, one, none, NOW))["predictionDrift"]
    assert m.reason == "no stable predictions in this window"
    # An output only one side predicts at all.
    other = metrics(prediction_classes=classes({"0": 50, "1": 50}, "other"))
    m = by_check(judge(a, many, other, NOW))["predictionDrift"]
    assert m.reason == "no predictions of output 'label' from stable"
    # The same for a regressor's histogram.
    hist_many = metrics(prediction_value_buckets={"score": cumulative([50, 50], [1.0])})
    hist_one = metrics(prediction_value_buckets={"score": cumulative([1, 0], [1.0])})
    hist_none = metrics(prediction_value_buckets={"score": cumulative([0, 0], [1.0])})
    m = by_check(judge(a, hist_one, hist_many, NOW))["predictionDrift"]
    assert (
        m.reason
        == "1 canary predictions of 'score' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )
    m = by_check(judge(a, hist_many, hist_one, NOW))["predictionDrift"]
    assert (
        m.reason
        == "1 stable predictions of 'score' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )
    m = by_check(judge(a, hist_one, hist_none, NOW))["predictionDrift"]
    assert m.reason == "no stable predictions in this window"


def test_prediction_drift_needs_20_predictions_per_bin_on_both_sides() -> None:
    a = spec({"predictionDrift": {}})
    forty = metrics(prediction_classes=classes({"0": 20, "1": 20}))
    assert by_check(judge(a, forty, forty, NOW))["predictionDrift"].verdict == "Passed"
    few = metrics(prediction_classes=classes({"0": 20, "1": 19}))
    m = by_check(judge(a, forty, few, NOW))["predictionDrift"]
    assert m.verdict == "Inconclusive"
    assert m.reason == (
        "39 stable predictions of 'label' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )
    # One class: 20 predictions are one bin's worth.
    one = metrics(prediction_classes=classes({"0": 20}))
    assert by_check(judge(a, one, one, NOW))["predictionDrift"].verdict == "Passed"
    # A regressor: 20 per aligned bucket, here 2 (le 1 and +Inf).
    hist = metrics(prediction_value_buckets={"score": cumulative([20, 20], [1.0])})
    assert by_check(judge(a, hist, hist, NOW))["predictionDrift"].verdict == "Passed"
    thin = metrics(prediction_value_buckets={"score": cumulative([20, 19], [1.0])})
    m = by_check(judge(a, hist, thin, NOW))["predictionDrift"]
    assert m.reason == (
        "39 stable predictions of 'score' < 40 for a reliable PSI over 2 bins (20 per bin)"
    )


def test_prediction_drift_reports_the_output_that_moved_most() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    even: dict[str, float] = {"0": 5000, "1": 5000}
    shifted: dict[str, float] = {"0": 2500, "1": 7500}  # PSI 0.274653 against even
    stable = metrics(prediction_classes={**classes(even, "a"), **classes(even, "b")})
    # Two outputs share the look's alpha; each has 10000 predictions a side: n_eff 5000.
    allowed = sequential.psi_critical(0.2, 5000, 2, sequential.look_alpha(0.01, 1) / 2)
    for moved, same in (("a", "b"), ("b", "a")):
        canary = metrics(prediction_classes={**classes(shifted, moved), **classes(even, same)})
        m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
        assert m.verdict == "Failed"
        assert m.value == pytest.approx(0.274653, abs=1e-6)
        assert m.reason == (
            f"vs stable, output '{moved}' PSI 0.2747, at most {allowed:.4g} allowed for maxPSI "
            "0.2 with 5000 observations (look 1)"
        )
    # A classifier output and a regressor output: the larger PSI of the two.
    hist_even = {"score": cumulative([5000, 5000], [1.0])}
    hist_shifted = {"score": cumulative([2500, 7500], [1.0])}
    stable = metrics(prediction_classes=classes(even), prediction_value_buckets=hist_even)
    canary = metrics(prediction_classes=classes(even), prediction_value_buckets=hist_shifted)
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    assert m.reason.startswith("vs stable, output 'score' PSI 0.2747, ")
    canary = metrics(prediction_classes=classes(shifted), prediction_value_buckets=hist_even)
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    assert m.reason.startswith("vs stable, output 'label' PSI 0.2747, ")
    # Two regressor outputs, the first one moved.
    stable = metrics(prediction_value_buckets={"p": hist_even["score"], "q": hist_even["score"]})
    canary = metrics(prediction_value_buckets={"p": hist_shifted["score"], "q": hist_even["score"]})
    m = by_check(judge(a, canary, stable, NOW))["predictionDrift"]
    assert m.reason.startswith("vs stable, output 'p' PSI 0.2747, ")
    assert m.verdict == "Failed"


def test_data_drift_reasons() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.2}})
    ref = {"x": cumulative([0.5, 0.5], [1.0]), "y": cumulative([0.5, 0.5], [3.0])}
    # x moved, y did not: the largest PSI is x's. The reference is exact: n_eff is the live
    # count, and the two features share the look's alpha.
    live = {"x": cumulative([1000, 3000], [1.0]), "y": cumulative([2000, 2000], [3.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=live), None, NOW)
    )["dataDrift"]
    assert (m.verdict, m.threshold) == ("Failed", "PSI <= 0.2")
    allowed = sequential.psi_critical(0.2, 4000, 2, sequential.look_alpha(0.01, 1) / 2)
    assert m.reason == (
        f"vs reference, feature 'x' PSI 0.2747, at most {allowed:.4g} allowed for maxPSI 0.2 "
        "with 4000 observations (look 1)"
    )
    # A feature without live series is left out; the others are judged.
    only_x = {"x": cumulative([500, 500], [1.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=only_x), None, NOW)
    )["dataDrift"]
    assert m.verdict == "Passed"
    assert m.reason.startswith("vs reference, feature 'x' PSI 0, ")
    # No live observation at all.
    m = by_check(judge(a, metrics(reference_input_ratios=ref), None, NOW))["dataDrift"]
    assert (m.verdict, m.reason) == ("Inconclusive", "no live input observations")
    # Live buckets that do not overlap the reference's.
    apart = {"x": cumulative([50, 50], [100.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=apart), None, NOW)
    )["dataDrift"]
    assert (m.verdict, m.reason) == (
        "Inconclusive",
        "feature 'x': live and reference buckets differ",
    )
    m = by_check(judge(a, metrics(), None, NOW))["dataDrift"]
    assert m.reason == "the model has no reference input statistics"


def test_data_drift_needs_20_live_values_per_bin() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.2}})
    ref = {"x": cumulative([0.5, 0.5], [1.0]), "y": cumulative([0.5, 0.5], [3.0])}
    enough = {"x": cumulative([20, 20], [1.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=enough), None, NOW)
    )["dataDrift"]
    assert m.verdict == "Passed"
    # Features are judged on their own: x without live series or with too few, y enough.
    for x_live in ({}, {"x": cumulative([20, 19], [1.0])}):
        live = {**x_live, "y": cumulative([20, 20], [3.0])}
        m = by_check(
            judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=live), None, NOW)
        )["dataDrift"]
        assert m.verdict == "Passed"
        assert m.reason.startswith("vs reference, feature 'y' PSI 0, ")
        assert m.reason.endswith(" with 40 observations (look 1)")
    # A single live value is too few, not none.
    one = {"x": cumulative([1, 0], [1.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=one), None, NOW)
    )["dataDrift"]
    assert m.reason == "1 live values of 'x' < 40 for a reliable PSI over 2 bins (20 per bin)"
    # x too few, y without live series: the reason is x's.
    few = {"x": cumulative([20, 19], [1.0])}
    m = by_check(
        judge(a, metrics(reference_input_ratios=ref, input_feature_buckets=few), None, NOW)
    )["dataDrift"]
    assert (m.verdict, m.reason) == (
        "Inconclusive",
        "39 live values of 'x' < 40 for a reliable PSI over 2 bins (20 per bin)",
    )


def test_custom_check_bounds_are_inclusive() -> None:
    prom = {"prometheus": {"address": "http://prometheus:9090"}}
    a = spec(
        {
            "custom": [
                {"name": "accuracy", "query": "q1", "min": 0.9},
                {"name": "queue", "query": "q2", "min": 0, "max": 10},
                {"name": "lag", "query": "q3", "max": 1},
            ]
        },
        provider=prom,
    )
    j = judge(a, metrics(), None, NOW, {"accuracy": 0.9, "queue": 10.0, "lag": 1.0})
    assert j.verdict == "Passed"
    m = by_check(j)
    assert (m["accuracy"].value, m["accuracy"].reason) == (0.9, "0.9 within >= 0.9")
    assert m["queue"].reason == "10 within >= 0 and <= 10"
    assert (m["lag"].threshold, m["lag"].reason) == ("<= 1", "1 within <= 1")
    m = by_check(judge(a, metrics(), None, NOW, {"queue": 11.0}))
    assert (m["queue"].verdict, m["queue"].value) == ("Failed", 11.0)
    assert m["queue"].reason == "11 > max 10"
    m = by_check(judge(a, metrics(), None, NOW, {"accuracy": 0.5}))
    assert (m["accuracy"].verdict, m["accuracy"].value) == ("Failed", 0.5)
    # An infinite value fails, and is not put in the status (no JSON number for it).
    m = by_check(judge(a, metrics(), None, NOW, {"queue": INF}))
    assert (m["queue"].verdict, m["queue"].value) == ("Failed", None)
    # NaN or nothing from Prometheus: no data, never a failure.
    m = by_check(judge(a, metrics(), None, NOW, {"accuracy": math.nan}))
    assert (m["accuracy"].verdict, m["accuracy"].value) == ("Inconclusive", None)
    assert m["accuracy"].reason == "no data (the query returned nothing)"
    assert m["lag"].reason == "no data (the query returned nothing)"


def test_a_long_reason_is_cut_to_what_the_status_holds() -> None:
    a = spec({"predictionDrift": {}})
    name = "o" * 2000
    # The canary predicts another output, but nothing of this one.
    stable = metrics(prediction_classes={**classes({"0": 50}, name), **classes({"0": 50})})
    silent = metrics(prediction_classes={**classes({"0": 0}, name), **classes({"0": 50})})
    m = by_check(judge(a, silent, stable, NOW))["predictionDrift"]
    assert len(m.reason) == 1024
    assert m.reason.startswith("no predictions of output 'ooo")


# ---------------------------------------------------------------------------------------------
# The podMetrics provider against a fake API client
# ---------------------------------------------------------------------------------------------

TARGET = AnalysisTarget(
    namespace="ml",
    deployment="iris",
    canary_revision_hash="c4n",
    stable_revision_hash="s7b",
    canary_revision_name="iris-c4n",
    stable_revision_name="iris-s7b",
    interval_seconds=30,
)


def exposition(revision: str, ok: int, bad: int, start: float = 1000.0) -> str:
    labels = (
        'model="iris",version="1",deployment="iris",namespace="ml",'
        f'revision="{revision}",role="canary"'
    )
    lines = [
        f"# TYPE {mc.REQUESTS.name} counter",
        f'{mc.REQUESTS.series}{{{labels},code="200"}} {ok}',
        f'{mc.REQUESTS.series}{{{labels},code="400"}} {bad}',
        f"# TYPE {mc.REQUEST_DURATION.name} histogram",
        f'{mc.REQUEST_DURATION.series}{{{labels},le="0.01"}} {ok + bad}',
        f'{mc.REQUEST_DURATION.series}{{{labels},le="+Inf"}} {ok + bad}',
        f"{mc.REQUEST_DURATION.name}_count{{{labels}}} {ok + bad}",
        f"{mc.REQUEST_DURATION.name}_sum{{{labels}}} 0.1",
        f"# TYPE {mc.MODEL_READY.name} gauge",
        f"{mc.MODEL_READY.name}{{{labels}}} 1",
        # A series of another revision must be ignored.
        f'{mc.MODEL_READY.name}{{deployment="iris",namespace="ml",revision="other"}} 1',
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {start}",
    ]
    return "\n".join(lines) + "\n"


class FakeKube:
    def __init__(self) -> None:
        self.pods: dict[str, list[dict[str, Any]]] = {"c4n": [], "s7b": []}
        self.texts: dict[str, str | Exception] = {}
        self.paths: list[str] = []

    def pod(self, rev: str, name: str, ready: bool = True) -> None:
        status = "True" if ready else "False"
        self.pods[rev].append(
            {
                "metadata": {"name": name, "uid": f"uid-{name}"},
                "status": {"conditions": [{"type": "Ready", "status": status}]},
            }
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert method == "GET"
        assert path == "/api/v1/namespaces/ml/pods"
        selector = kwargs["query"]["labelSelector"]
        rev = selector.split("canarium.dev/revision=")[1]
        assert selector.startswith("canarium.dev/deployment=iris,")
        return {"items": self.pods[rev]}

    async def get_text(self, path: str, *, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        self.paths.append(path)
        pod = path.split("/pods/")[1].split(":", maxsplit=1)[0]
        text = self.texts[pod]
        if isinstance(text, Exception):
            raise text
        return text


def test_pod_metrics_provider_windows() -> None:
    kube = FakeKube()
    kube.pod("c4n", "c1")
    kube.pod("c4n", "c2")
    kube.pod("s7b", "s1")
    kube.texts = {
        "c1": exposition("iris-c4n", 10, 1),
        "c2": exposition("iris-c4n", 5, 0),
        "s1": exposition("iris-s7b", 100, 0),
    }
    provider = PodMetricsProvider(kube)

    async def scenario() -> None:
        first = await provider.measure(TARGET)
        assert (first.canary, first.stable, first.errors) == (None, None, [])
        assert "/api/v1/namespaces/ml/pods/c1:8080/proxy/metrics" in kube.paths
        kube.texts["c1"] = exposition("iris-c4n", 40, 3)  # +30 ok, +2 bad
        kube.texts["c2"] = RuntimeError("connection refused")  # scrape fails: reported
        kube.texts["s1"] = exposition("iris-s7b", 160, 0)
        second = await provider.measure(TARGET)
        assert second.canary is not None
        assert second.stable is not None
        assert (second.canary.requests, second.canary.errors) == (32, 2)
        assert second.canary.pods == 1
        assert second.stable.requests == 60
        assert any("c2" in e and "connection refused" in e for e in second.errors)
        # c2 comes back: it kept its old sample, so it counts from there, not from zero.
        kube.texts["c2"] = exposition("iris-c4n", 9, 0)
        kube.pod("c4n", "c3")  # a new pod counts from zero
        kube.texts["c3"] = exposition("iris-c4n", 4, 4)
        third = await provider.measure(TARGET)
        assert third.canary is not None
        assert (third.canary.requests, third.canary.errors) == (4 + 8, 4)
        assert third.errors == []
        # A pod whose metrics carry other labels is reported, not counted.
        kube.texts["c3"] = exposition("iris-zzz", 400, 0)
        fourth = await provider.measure(TARGET)
        assert fourth.canary is not None
        assert fourth.canary.requests == 0
        assert any("no canarium series" in e for e in fourth.errors)
        # forget, then baseline: the next measure has data at once.
        provider.forget("ml", "iris")
        assert (await provider.measure(TARGET)).canary is None
        await provider.baseline(TARGET)
        kube.texts["c1"] = exposition("iris-c4n", 41, 3)
        fifth = await provider.measure(TARGET)
        assert fifth.canary is not None
        assert fifth.canary.requests == 1
        assert await provider.custom_values(spec({"errorRate": {"max": 1}}), TARGET) == {}

    asyncio.run(scenario())


def test_pod_metrics_provider_not_ready_pods_and_list_errors() -> None:
    kube = FakeKube()
    kube.pod("c4n", "c1", ready=False)
    kube.texts = {"c1": exposition("iris-c4n", 10, 0)}
    provider = PodMetricsProvider(kube)
    target = AnalysisTarget("ml", "iris", "c4n", None, "iris-c4n", None, 30)

    async def scenario() -> None:
        await provider.baseline(target)
        result = await provider.measure(target)
        assert kube.paths == []  # not Ready: not scraped
        assert result.canary is not None
        assert result.canary.pods == 0
        assert result.stable is None

        async def broken(method: str, path: str, **kwargs: Any) -> Any:
            raise RuntimeError("403 Forbidden")

        kube.request = broken  # type: ignore[method-assign]
        result = await provider.measure(target)
        assert result.canary is None
        assert any("403" in e for e in result.errors)

    asyncio.run(scenario())


def test_provider_for() -> None:
    providers = ProviderRegistry(ProviderContext(FakeKube()))
    pod_spec = MetricsProvider.model_validate({"podMetrics": {}})
    first = providers.provider_for(pod_spec)
    assert isinstance(first, PodMetricsProvider)
    assert providers.provider_for(pod_spec) is first  # the baselines live in one instance
    prom = providers.provider_for(
        MetricsProvider.model_validate({"prometheus": {"address": "http://p:9090"}})
    )
    assert isinstance(prom, PrometheusProvider)


# ---------------------------------------------------------------------------------------------
# The prometheus provider against a fake Prometheus HTTP API
# ---------------------------------------------------------------------------------------------


def vector(*items: tuple[dict[str, str], float | str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1.0, str(v)]} for m, v in items],
        },
    }


# The fake Prometheus' answer to a query that holds one of these markers (first match wins):
# its failures and the custom metrics' queries.
ANSWERS_BY_MARKER: list[tuple[str, int, dict[str, Any]]] = [
    ("boom", 500, {"oops": 1}),
    ("bad(", 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    ("custom_one", 200, vector(({}, 0.97))),
    (
        "custom_scalar",
        200,
        {"status": "success", "data": {"resultType": "scalar", "result": [1, "5"]}},
    ),
    ("custom_many", 200, vector(({"a": "1"}, 1), ({"a": "2"}, 2))),
    ("custom_nan", 200, vector(({}, "NaN"))),
]

# The canary revision's series, by the metric a query reads (first match wins).
CANARY_SERIES: list[tuple[str, dict[str, Any]]] = [
    (mc.REQUESTS.series, vector(({"code": "200"}, 90), ({"code": "400"}, 6), ({"code": "503"}, 4))),
    (mc.REQUEST_DURATION.series, vector(({"le": "0.1"}, 99), ({"le": "+Inf"}, 100))),
    (mc.PREDICTION_CLASS.series, vector(({"output": "label", "class": "1"}, 100))),
    (
        mc.INPUT_FEATURE_VALUE.series,
        vector(({"feature": "x", "le": "1"}, 40), ({"feature": "x", "le": "+Inf"}, 100)),
    ),
    (
        mc.REFERENCE_INPUT_FEATURE_RATIO.name,
        vector(({"feature": "x", "le": "1"}, 0.5), ({"feature": "x", "le": "+Inf"}, 1)),
    ),
    (mc.MODEL_READY.name, vector(({}, 2))),
]


def fake_answer(query: str) -> tuple[int, dict[str, Any]]:
    for marker, status, body in ANSWERS_BY_MARKER:
        if marker in query:
            return status, body
    if 'revision="iris-s7b"' in query and mc.REQUESTS.series in query:
        return 200, vector(({"code": "200"}, 300))
    if 'revision="iris-c4n"' in query:
        for metric, series in CANARY_SERIES:
            if metric in query:
                return 200, series
    return 200, vector()


class FakePrometheus:
    def __init__(self) -> None:
        self.queries: list[str] = []
        self.times: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.fail_all = False

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query["query"]
        self.queries.append(query)
        self.times.append(request.query.get("time", ""))
        self.headers.append(dict(request.headers))
        status, body = (500, {}) if self.fail_all else fake_answer(query)
        return web.json_response(body, status=status)


@pytest.fixture
def prometheus_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, FakePrometheus]]:
    loop = asyncio.new_event_loop()
    fake = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", fake.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield loop, fake
    loop.run_until_complete(runner.cleanup())
    loop.close()


def prom_spec(url: str) -> MetricsProvider:
    return MetricsProvider.model_validate(
        {
            "prometheus": {
                "address": url + "/",
                "headers": [{"name": "X-Scope-OrgID", "value": "t1"}],
            }
        }
    )


def test_prometheus_provider_measures(
    prometheus_loop: tuple[asyncio.AbstractEventLoop, FakePrometheus],
) -> None:
    loop, fake = prometheus_loop
    provider = ProviderRegistry(ProviderContext(FakeKube())).provider_for(prom_spec(fake.url))
    result = loop.run_until_complete(provider.measure(TARGET))
    assert result.errors == []
    canary, stable = result.canary, result.stable
    assert canary is not None
    assert stable is not None
    assert (canary.requests, canary.errors, canary.pods) == (100, 10, 2)
    assert canary.latency_buckets == {0.1: 99.0, INF: 100.0}
    assert canary.prediction_classes == {("label", "1"): 100.0}
    assert canary.input_feature_buckets == {"x": {1.0: 40.0, INF: 100.0}}
    assert canary.reference_input_ratios == {"x": {1.0: 0.5, INF: 1.0}}
    assert stable.requests == 300
    sel = '{namespace="ml",deployment="iris",revision="iris-c4n"}'
    assert f"sum by (code) (increase({mc.REQUESTS.series}{sel}[30s]))" in fake.queries
    assert f"sum by (le) (increase({mc.REQUEST_DURATION.series}{sel}[30s]))" in (fake.queries)
    assert all(h.get("X-Scope-OrgID") == "t1" for h in fake.headers)
    assert len(set(fake.times)) == 1  # every query evaluated at the same instant
    assert fake.times[0]
    j = judge(spec({"errorRate": {"max": 0.05}}), canary, stable, NOW)
    assert j.verdict == "Failed"


def test_prometheus_provider_errors_and_no_data(
    prometheus_loop: tuple[asyncio.AbstractEventLoop, FakePrometheus],
) -> None:
    loop, fake = prometheus_loop
    provider = PrometheusProvider(prom_spec(fake.url).prometheus)  # type: ignore[arg-type]
    nothing = AnalysisTarget("ml", "iris", "n0", None, "iris-none", None, 60)
    result = loop.run_until_complete(provider.measure(nothing))
    assert (result.canary, result.stable, result.errors) == (None, None, [])
    fake.fail_all = True
    result = loop.run_until_complete(provider.measure(TARGET))
    assert result.canary is None
    assert result.stable is None
    assert any("HTTP 500" in e for e in result.errors)
    fake.fail_all = False
    # Nothing listening: reported, not raised.
    gone = PrometheusProvider(prom_spec("http://127.0.0.1:9").prometheus, timeout=2)  # type: ignore[arg-type]
    result = loop.run_until_complete(gone.measure(TARGET))
    assert result.canary is None
    assert result.errors


def test_prometheus_custom_values(
    prometheus_loop: tuple[asyncio.AbstractEventLoop, FakePrometheus],
) -> None:
    loop, fake = prometheus_loop
    provider = PrometheusProvider(prom_spec(fake.url).prometheus)  # type: ignore[arg-type]
    checks = [
        {"name": "one", "query": 'custom_one{revision="{{revision}}",role="{{role}}"}', "min": 0},
        {"name": "scalar", "query": "custom_scalar", "max": 10},
        {"name": "many", "query": "custom_many", "max": 10},
        {"name": "nan", "query": "custom_nan", "max": 10},
        {"name": "empty", "query": "custom_empty", "max": 10},
        {"name": "bad", "query": "bad(", "max": 10},
        {"name": "boom", "query": "boom", "max": 10},
    ]
    analysis = spec({"custom": checks}, provider={"prometheus": {"address": fake.url}})
    values = loop.run_until_complete(provider.custom_values(analysis, TARGET))
    assert values == {
        "one": 0.97,
        "scalar": 5.0,
        "many": None,
        "nan": None,
        "empty": None,
        "bad": None,
        "boom": None,
    }
    assert 'custom_one{revision="iris-c4n",role="canary"}' in fake.queries
    j = judge(analysis, metrics(), None, NOW, values)
    assert j.verdict == "Inconclusive"  # no data is never failure


def test_prometheus_helpers() -> None:
    q = "x{namespace='{{namespace}}',deployment='{{deployment}}'} {{ revision }}"
    assert fill_template(q, namespace="n", deployment="d", revision="r", role="canary") == (
        "x{namespace='n',deployment='d'} {{ revision }}"
    )
    assert selector("n", 'a"b', "r") == '{namespace="n",deployment="a\\"b",revision="r"}'
    assert parse_answer(vector(({"le": "+Inf"}, "+Inf"))) == [({"le": "+Inf"}, INF)]
    with pytest.raises(Exception, match="bad_data"):
        parse_answer({"status": "error", "errorType": "bad_data", "error": "x"})
    with pytest.raises(Exception, match="matrix"):
        parse_answer({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_drift_on_too_few_observations_is_inconclusive_not_failed() -> None:
    """Two samples of one distribution with few observations per bin often show a PSI over
    0.25: that noise must hold a rollout, never roll a good version back."""
    a = spec({"predictionDrift": {"maxPSI": 0.25}})
    stable = metrics(requests=200, prediction_classes=classes({"0": 70, "1": 65, "2": 65}))
    skewed_but_tiny = metrics(requests=17, prediction_classes=classes({"0": 2, "1": 12, "2": 3}))
    m = by_check(judge(a, skewed_but_tiny, stable, NOW))["predictionDrift"]
    assert m.verdict == "Inconclusive"
    assert "17 canary predictions of 'label' < 60 for a reliable PSI over 3 bins" in (
        m.reason or ""
    )
    enough = metrics(requests=90, prediction_classes=classes({"0": 10, "1": 70, "2": 10}))
    assert by_check(judge(a, enough, stable, NOW))["predictionDrift"].verdict == "Failed"
