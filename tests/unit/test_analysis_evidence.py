"""The judge's evidence over a rollout: what accumulates from window to window, what restarts
it, what fails for good, and how the statistical checks share alpha."""

from __future__ import annotations

import math
from typing import Any

import pytest
from canarium.analysis import RevisionMetrics, judge, sequential
from canarium.analysis.judge import Judgement, alpha_shares
from canarium.api import AnalysisChecks, AnalysisSpec, Evidence
from canarium_serving.metrics_contract import psi

from tests.unit.test_analysis_judge import NOW, by_check, classes, cumulative, metrics, spec

INF = math.inf


def run(
    analysis: AnalysisSpec,
    windows: list[tuple[RevisionMetrics | None, RevisionMetrics | None]],
    evidence: list[Evidence] | None = None,
) -> list[Judgement]:
    """Judge the windows one after the other, each with the evidence of the one before."""
    out = []
    gathered = evidence or []
    for canary, stable in windows:
        judgement = judge(analysis, canary, stable, NOW, evidence=gathered)
        gathered = judgement.evidence
        out.append(judgement)
    return out


def of(judgement: Judgement, check: str) -> Evidence:
    return next(e for e in judgement.evidence if e.check == check)


def test_evidence_accumulates_across_windows() -> None:
    a = spec({"errorRate": {}})
    first, second = run(
        a,
        [
            (metrics(requests=100, errors=2), metrics(requests=900, errors=9)),
            (metrics(requests=300, errors=3), metrics(requests=700, errors=14)),
        ],
    )
    one, two = of(first, "errorRate"), of(second, "errorRate")
    assert (one.canary_requests, one.canary_events, one.stable_requests, one.stable_events) == (
        100,
        2,
        900,
        9,
    )
    assert (two.canary_requests, two.canary_events, two.stable_requests, two.stable_events) == (
        400,
        5,
        1600,
        23,
    )
    # The log-likelihood is the sum of both windows' (stratified: each window compares the
    # revisions within it), not the pooled counts'.
    expected = sequential.add_interval(
        sequential.add_interval(sequential.empty_log_likelihood(), 1.5, (100, 2), (900, 9)),
        1.5,
        (300, 3),
        (700, 14),
    )
    assert two.log_likelihood == pytest.approx(expected, abs=1e-3)
    assert two.log_likelihood != one.log_likelihood
    assert two.ratio == pytest.approx((5 / 400) / (23 / 1600), rel=1e-5)
    # The evidence handed in is not changed in place.
    assert one.canary_requests == 100


def test_a_canary_worse_over_several_windows_fails_once_the_evidence_is_strong() -> None:
    """Each window alone is weak evidence (it leans worse but shows nothing: it holds, it does
    not fail); together they show it."""
    a = spec({"errorRate": {}})
    window = (metrics(requests=200, errors=8), metrics(requests=200, errors=2))
    alone = judge(a, *window, NOW)
    assert alone.verdict == "Inconclusive"
    assert by_check(alone)["errorRate"].reason.endswith(
        ": leaning worse than 1.5x stable, not shown yet: holding for more evidence"
    )
    judgements = run(a, [window] * 12)
    verdicts = [j.verdict for j in judgements]
    assert verdicts[0] == "Inconclusive"
    assert verdicts[-1] == "Failed"
    first_failed = verdicts.index("Failed")
    assert first_failed > 1, "no single window shows it"
    assert set(verdicts[:first_failed]) == {"Inconclusive"}, "never passed while leaning worse"
    assert set(verdicts[first_failed:]) == {"Failed"}, "once shown, failed for good"


def test_changing_max_ratio_restarts_the_evidence() -> None:
    window = (metrics(requests=100, errors=2), metrics(requests=900, errors=9))
    (before,) = run(spec({"errorRate": {"maxRatio": 1.5}}), [window])
    (same,) = run(spec({"errorRate": {"maxRatio": 1.5}}), [window], before.evidence)
    (changed,) = run(spec({"errorRate": {"maxRatio": 2}}), [window], before.evidence)
    assert of(same, "errorRate").canary_requests == 200
    restarted = of(changed, "errorRate")
    assert (restarted.canary_requests, restarted.max_ratio) == (100, 2.0)
    # A failure shown against the old tolerance is not one against the new.
    failed = Evidence(
        check="errorRate", decision="Failed", max_ratio=1.5, log_likelihood=[0.0] * 41
    )
    (j,) = run(spec({"errorRate": {"maxRatio": 3}}), [window], [failed])
    assert of(j, "errorRate").decision is None
    assert j.verdict != "Failed"
    # With a window clear enough to pass on its own, it passes.
    clear = (metrics(requests=1000, errors=10), metrics(requests=1000, errors=10))
    (j,) = run(spec({"errorRate": {"maxRatio": 3}}), [clear], [failed])
    assert of(j, "errorRate").decision is None
    assert j.verdict == "Passed", j.summary


def test_a_failure_is_sticky() -> None:
    a = spec({"errorRate": {}})
    bad = (metrics(requests=200, errors=40), metrics(requests=800, errors=8))
    good = (metrics(requests=5000, errors=0), metrics(requests=5000, errors=50))
    failed, later, no_data = run(a, [bad, good, (None, None)])
    assert failed.verdict == "Failed"
    assert later.verdict == "Failed"
    m = by_check(later)["errorRate"]
    assert m.verdict == "Failed"
    assert m.reason.endswith(": shown worse earlier in this rollout")
    assert of(later, "errorRate").canary_requests == 5200, "the evidence still accumulates"
    assert of(no_data, "errorRate").decision == "Failed"
    assert no_data.verdict == "Failed"


def test_a_small_window_holds_a_pass_and_custom_failure_but_not_a_statistical_failure() -> None:
    prom = {"prometheus": {"address": "http://prometheus:9090"}}
    custom = [{"name": "accuracy", "query": "q", "min": 0.9}]
    a = spec({"errorRate": {}, "custom": custom}, min_samples=50, provider=prom)
    small = metrics(requests=20, errors=0)
    j = judge(a, small, metrics(requests=1000, errors=10), NOW, {"accuracy": 0.5})
    m = by_check(j)
    assert (m["errorRate"].verdict, m["accuracy"].verdict) == ("Inconclusive", "Inconclusive")
    assert m["accuracy"].reason == "20 requests < minSamples 50 (0.5 < min 0.9)"
    assert j.verdict == "Inconclusive"
    # A drift shown in a window with fewer canary requests than minSamples (its predictions
    # are enough for a PSI): the drift's failure stands.
    drift = spec({"dataDrift": {"maxPSI": 0.1}}, min_samples=100000)
    ref = {"x": cumulative([0.5, 0.5], [1.0])}
    moved = metrics(
        requests=4000,
        reference_input_ratios=ref,
        input_feature_buckets={"x": cumulative([400, 3600], [1.0])},
    )
    j = judge(drift, moved, None, NOW)
    assert by_check(j)["samples"].verdict == "Inconclusive"
    assert (j.verdict, by_check(j)["dataDrift"].verdict) == ("Failed", "Failed")


def test_windows_without_stable_traffic_are_compared_with_stables_upper_bound() -> None:
    a = spec({"errorRate": {}})
    # The rollout: stable erred in 1% of 10000 requests.
    (rollout,) = run(a, [(metrics(requests=1000, errors=10), metrics(requests=10000, errors=100))])
    paired = of(rollout, "errorRate")
    # The bake: stable takes no traffic. 1% of errors is no evidence against the canary ...
    same = run(a, [(metrics(requests=2000, errors=20), None)] * 5, rollout.evidence)
    e = of(same[-1], "errorRate")
    assert (e.unpaired_requests, e.unpaired_events) == (10000, 100)
    assert (e.canary_requests, e.stable_requests) == (paired.canary_requests, 10000)
    assert e.log_likelihood == paired.log_likelihood, "unpaired windows add no paired evidence"
    assert all(j.verdict == "Passed" for j in same)
    assert "without stable traffic 1% (100/1e+04)" in by_check(same[-1])["errorRate"].reason
    # ... 5% is, through the reference path only.
    worse = run(a, [(metrics(requests=2000, errors=100), None)] * 3, rollout.evidence)
    assert worse[-1].verdict == "Failed"
    failed = next(j for j in worse if j.verdict == "Failed")
    assert by_check(failed)["errorRate"].reason.endswith(
        "; without stable traffic 5% (100/2000): shown worse than 1.5x stable"
    )
    # Without stable requests ever, there is no reference: nothing can fail (no guard set).
    never = run(a, [(metrics(requests=2000, errors=1000), None)] * 3)
    assert [j.verdict for j in never] == ["Passed"] * 3
    assert of(never[-1], "errorRate").unpaired_events == 3000


def test_a_lucky_stable_does_not_make_a_good_canary_look_bad_in_the_bake() -> None:
    """Stable had no error in 1000 requests; the canary's 0.1% afterwards is infinitely worse
    than stable's point estimate, but not than its upper confidence bound."""
    a = spec({"errorRate": {}})
    (rollout,) = run(a, [(metrics(requests=200), metrics(requests=1000))])
    bake = run(a, [(metrics(requests=1000, errors=1), None)] * 3, rollout.evidence)
    assert [j.verdict for j in bake] == ["Passed"] * 3


def test_the_absolute_guard_fails_a_canary_that_errs_often_whatever_stable_does() -> None:
    a = spec({"errorRate": {"maxRatio": 2, "max": 0.05}})
    half = (metrics(requests=100, errors=50), metrics(requests=100, errors=50))
    (j,) = run(a, [half])
    m = by_check(j)["errorRate"]
    assert (j.verdict, m.verdict) == ("Failed", "Failed")
    assert m.reason.endswith("50% (50/100) over the guard: shown above the guard 0.05")
    assert of(j, "errorRate").decision == "Failed"
    # Without the guard the same window compares with stable: equal, fine.
    (j,) = run(spec({"errorRate": {"maxRatio": 2}}), [half])
    assert j.verdict == "Passed"
    # A canary just within the guard never fails it, however long it runs.
    within = (metrics(requests=1000, errors=40), metrics(requests=1000, errors=40))
    assert {j.verdict for j in run(a, [within] * 20)} == {"Passed"}


def test_latency_takes_its_slow_bound_from_the_first_window_with_enough_stable_requests() -> None:
    a = spec({"latencyP99": {}})
    edges = [0.1, 0.2, 0.5]

    def hist(counts: list[float]) -> dict[float, float]:
        return cumulative(counts, edges)

    few = metrics(requests=50, latency_buckets=hist([40, 9, 1, 0]))
    stable = metrics(requests=1000, latency_buckets=hist([800, 190, 10, 0]))  # p99 200 ms
    slow = metrics(requests=500, latency_buckets=hist([200, 100, 150, 50]))  # 40% over 200 ms
    first, second, third = run(a, [(slow, few), (slow, stable), (slow, stable)])
    assert of(first, "latencyP99").slow_seconds is None
    assert of(second, "latencyP99").slow_seconds == 0.2
    assert (of(second, "latencyP99").canary_requests, second.verdict) == (0, "Passed")
    e = of(third, "latencyP99")
    assert (e.canary_requests, e.canary_events, e.stable_requests, e.stable_events) == (
        500,
        200,
        1000,
        10,
    )
    assert third.verdict == "Failed"
    # The bound stays the one taken, whatever stable does later.
    later = metrics(requests=1000, latency_buckets=hist([100, 100, 790, 10]))
    (j,) = run(a, [(slow, later)], third.evidence)
    assert of(j, "latencyP99").slow_seconds == 0.2


def test_the_max_ms_guard_fails_a_slow_canary_even_when_stable_is_as_slow() -> None:
    a = spec({"latencyP99": {"maxRatio": 2, "maxMs": 250}})
    edges = [0.1, 0.25, 0.5]
    slow = metrics(requests=1000, latency_buckets=cumulative([500, 100, 400, 0], edges))
    (j,) = run(a, [(slow, slow)])
    m = by_check(j)["latencyP99"]
    assert (j.verdict, m.verdict) == ("Failed", "Failed")
    assert "40% (400/1000) over the guard" in m.reason
    e = of(j, "latencyP99")
    assert (e.guard_requests, e.guard_events) == (1000, 400)
    # Within 250 ms, 99.5% of the time: not shown above a p99 of 250 ms.
    fast = metrics(requests=1000, latency_buckets=cumulative([900, 95, 5, 0], edges))
    assert {j.verdict for j in run(a, [(fast, fast)] * 5)} == {"Passed"}


def test_drift_spends_alpha_over_its_looks() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.1}})
    ref = {"x": cumulative([0.5, 0.5], [1.0])}
    live = metrics(
        reference_input_ratios=ref, input_feature_buckets={"x": cumulative([1380, 620], [1.0])}
    )
    value = psi([0.5, 0.5], [0.69, 0.31])
    at_first = sequential.psi_critical(0.1, 2000, 2, sequential.look_alpha(0.01, 1))
    at_fiftieth = sequential.psi_critical(0.1, 2000, 2, sequential.look_alpha(0.01, 50))
    assert at_first < value < at_fiftieth  # the case this test is about
    (j,) = run(a, [(live, None)])
    assert (j.verdict, of(j, "dataDrift").looks) == ("Failed", 1)
    # 49 looks already taken: the 50th is tested at a 2500th of the first one's alpha. Not
    # shown beyond maxPSI then, but above it: it holds rather than passes.
    (j,) = run(a, [(live, None)], [Evidence(check="dataDrift", looks=49)])
    assert (j.verdict, of(j, "dataDrift").looks) == ("Inconclusive", 50)
    assert "(look 50)" in by_check(j)["dataDrift"].reason
    # Windows that test nothing (too few values, even pooled) are no look.
    thin = metrics(
        reference_input_ratios=ref, input_feature_buckets={"x": cumulative([5, 5], [1.0])}
    )
    judgements = run(a, [(thin, None), (thin, None)], [Evidence(check="dataDrift", looks=3)])
    assert [of(j, "dataDrift").looks for j in judgements] == [3, 3]
    # Looks count for prediction drift too, and a failure there stays. The counts are pooled
    # over the windows: the shifted window outweighs the even one before it.
    b = spec({"predictionDrift": {"maxPSI": 0.2}})
    even = metrics(prediction_classes=classes({"0": 1000, "1": 1000}))
    shifted = metrics(prediction_classes=classes({"0": 1000, "1": 9000}))
    judgements = run(b, [(even, even), (shifted, even), (even, even)])
    assert [of(j, "predictionDrift").looks for j in judgements] == [1, 2, 3]
    assert [j.verdict for j in judgements] == ["Passed", "Failed", "Failed"]


def checks(data: dict[str, Any]) -> AnalysisChecks:
    return AnalysisChecks.model_validate(data)


def test_alpha_shares() -> None:
    assert alpha_shares(checks({"custom": [{"name": "a", "query": "q", "min": 1}]})) == 1
    assert alpha_shares(checks({"errorRate": {}})) == 1
    assert alpha_shares(checks({"errorRate": {"max": 0.1}})) == 2
    assert alpha_shares(checks({"latencyP99": {}})) == 1
    assert alpha_shares(checks({"latencyP99": {"maxMs": 100}})) == 2
    assert alpha_shares(checks({"predictionDrift": {}, "dataDrift": {}})) == 2
    every = {
        "errorRate": {"max": 0.1},
        "latencyP99": {"maxMs": 100},
        "predictionDrift": {},
        "dataDrift": {},
    }
    assert alpha_shares(checks(every)) == 6


def test_the_checks_share_the_analysis_alpha() -> None:
    window = (metrics(requests=100, errors=2), metrics(requests=900, errors=9))
    alone = by_check(judge(spec({"errorRate": {}}, alpha=0.02), *window, NOW))
    assert "98% interval" in alone["errorRate"].reason
    shared = by_check(judge(spec({"errorRate": {}, "dataDrift": {}}, alpha=0.02), *window, NOW))
    assert "99% interval" in shared["errorRate"].reason
    # The interval in the evidence is the confidence sequence at the check's share.
    big = (metrics(requests=1000, errors=40), metrics(requests=9000, errors=180))
    j = judge(spec({"errorRate": {}, "dataDrift": {}}, alpha=0.02), *big, NOW)
    e = of(j, "errorRate")
    at_share = sequential.ratio_evidence(e.log_likelihood, 1.5, 0.01)
    at_whole = sequential.ratio_evidence(e.log_likelihood, 1.5, 0.02)
    assert (at_share.lower, at_share.upper) != (at_whole.lower, at_whole.upper)
    assert at_share.lower is not None
    assert at_share.upper is not None
    assert e.ratio_lower == pytest.approx(at_share.lower, rel=1e-5)
    assert e.ratio_upper == pytest.approx(at_share.upper, rel=1e-5)
    # The drift look's level is its share too.
    a = spec({"errorRate": {"max": 0.5}, "dataDrift": {"maxPSI": 0.1}}, alpha=0.03)
    ref = {"x": cumulative([0.5, 0.5], [1.0])}
    live = metrics(
        reference_input_ratios=ref, input_feature_buckets={"x": cumulative([1000, 1000], [1.0])}
    )
    allowed = sequential.psi_critical(0.1, 2000, 2, sequential.look_alpha(0.01, 1))
    assert (
        f"at most {allowed:.4g} allowed" in by_check(judge(a, live, None, NOW))["dataDrift"].reason
    )
