"""When an undecided check holds the step rather than passes it, and the drift checks' evidence
pooled over the rollout.

Comparisons with stable (errorRate, latencyP99) that are neither shown worse nor shown within
tolerance pass only when the data do not lean worse (the ratio's estimate is not above maxRatio,
the canary's rate not above the guard's limit) and, when there are errors or slow requests to
compare, a ratio of twice the tolerance is at least 3 times less likely than the tolerance. No
events on either side: nothing to compare, it passes. A decided comparison is never held.

Drift checks pool the counts of every window with data, test the pooled counts (one look per
window that adds data) and hold a PSI above maxPSI that is within the noise."""

from __future__ import annotations

import math

import pytest
from canarium.analysis import RevisionMetrics, judge, sequential
from canarium.analysis.judge import (
    CLEAR_ODDS,
    _hold,
    pooled_counts,
    pooled_metrics,
)
from canarium.api import Evidence

from tests.unit.test_analysis_evidence import of, run
from tests.unit.test_analysis_judge import NOW, by_check, classes, cumulative, metrics, spec

INF = math.inf
LEANING = "not shown yet: holding for more evidence"
NOT_CLEAR = "not yet 3 times likelier within 1.5x stable than at twice that"
DRIFT_HOLD = ": holding for more evidence"


def shown(e: Evidence) -> sequential.RatioEvidence:
    assert e.max_ratio is not None
    return sequential.ratio_evidence(e.log_likelihood, e.max_ratio, 0.01)


# --- what ratio_evidence says about leaning and clear odds -------------------------------------


def test_ratio_evidence_leaning_and_double_from_their_definitions() -> None:
    """log_lr_worse is the largest log-likelihood ratio of a worse grid ratio against the
    tolerance; log_lr_double that of the grid ratio 1.25^3 times the tolerance."""
    tolerance = 1.5
    ll = sequential.add_interval(sequential.empty_log_likelihood(), tolerance, (200, 8), (200, 2))
    ratios = sequential.grid_ratios(tolerance)

    def log_l(r: float) -> float:  # the binomial log-likelihood of the canary's share
        share = 200 * r / (200 * r + 200)
        return 8 * math.log(share) + 2 * math.log(1 - share)

    e = sequential.ratio_evidence(ll, tolerance, 0.01)
    worse = max(log_l(r) for r in ratios[sequential.GRID_HALF + 1 :]) - log_l(tolerance)
    assert e.log_lr_worse == pytest.approx(worse, abs=1e-9)
    assert e.log_lr_worse > 0, "the estimate 4 is above the tolerance"
    double = ratios[sequential.GRID_HALF + sequential.DOUBLE_STEPS]
    assert double == pytest.approx(tolerance * 1.25**3)
    assert e.log_lr_double == pytest.approx(log_l(double) - log_l(tolerance), abs=1e-9)
    # An estimate below the tolerance: no worse ratio is likelier than the tolerance.
    ll = sequential.add_interval(sequential.empty_log_likelihood(), tolerance, (200, 2), (200, 8))
    assert sequential.ratio_evidence(ll, tolerance, 0.01).log_lr_worse < 0
    # No evidence at all: every ratio as likely as the tolerance.
    nothing = sequential.ratio_evidence(sequential.empty_log_likelihood(), tolerance, 0.01)
    assert (nothing.log_lr_worse, nothing.log_lr_double) == (0.0, 0.0)


# --- (a) leaning worse ---------------------------------------------------------------------------


def test_a_canary_leaning_worse_holds_until_the_evidence_shows_it_worse() -> None:
    a = spec({"errorRate": {}})  # maxRatio 1.5
    window = (metrics(requests=200, errors=8), metrics(requests=200, errors=2))  # ratio 4
    judgements = run(a, [window] * 12)
    verdicts = [j.verdict for j in judgements]
    first_failed = verdicts.index("Failed")
    assert first_failed >= 2
    for j in judgements[:first_failed]:
        e = of(j, "errorRate")
        assert e.decision is None
        assert shown(e).log_lr_worse > 0
        assert e.ratio == pytest.approx(4.0)
        m = by_check(j)["errorRate"]
        assert m.verdict == "Inconclusive"
        assert m.reason.endswith(": leaning worse than 1.5x stable, " + LEANING)
        assert j.verdict == "Inconclusive"
    assert set(verdicts[first_failed:]) == {"Failed"}


@pytest.mark.parametrize("canary_errors", [18, 16])
def test_a_canary_just_above_the_tolerance_holds_and_never_passes(canary_errors: int) -> None:
    """An estimate of 1.8 (or 1.6, between the tolerance and the next grid ratio, 1.875) is
    above maxRatio 1.5 but far from shown: every window holds, however many there are."""
    a = spec({"errorRate": {}})
    window = (metrics(requests=1000, errors=canary_errors), metrics(requests=1000, errors=10))
    judgements = run(a, [window] * 10)
    assert [j.verdict for j in judgements] == ["Inconclusive"] * 10
    for j in judgements:
        e = of(j, "errorRate")
        assert e.decision is None
        assert e.ratio == pytest.approx(canary_errors / 10)
        evidence = shown(e)
        assert evidence.log_lr_worse > 0 or evidence.slope > 0
        assert "leaning worse than 1.5x stable" in by_check(j)["errorRate"].reason
    assert of(judgements[-1], "errorRate").canary_events == 10 * canary_errors


def test_leaning_worse_holds_latency_too() -> None:
    a = spec({"latencyP99": {}})  # maxRatio 2
    edges = [0.1, 0.5]
    stable = metrics(requests=1000, latency_buckets=cumulative([900, 90, 10], edges))  # p99 0.5
    first = judge(a, stable, stable, NOW)
    assert [e.slow_seconds for e in first.evidence] == [0.5]
    # 4 of 100 canary requests slow against 1% of stable's: 4 times as many, not shown yet.
    canary = metrics(requests=100, latency_buckets=cumulative([90, 6, 4], edges))
    j = judge(a, canary, stable, NOW, evidence=first.evidence)
    m = by_check(j)["latencyP99"]
    assert (m.verdict, m.value) == ("Inconclusive", pytest.approx(4.0))
    assert m.reason.startswith("slow: over 500 ms; canary 4% (4/100), stable 1% (10/1000)")
    assert m.reason.endswith("leaning worse than 2x stable, " + LEANING)
    (e,) = j.evidence
    assert e.decision is None


def test_a_canary_leaning_worse_then_good_holds_until_the_evidence_favours_it() -> None:
    """Holding is not failing: a canary that looked worse in its first window and then errs
    as often as stable passes once the evidence no longer leans worse and is clear."""
    a = spec({"errorRate": {}})
    unlucky = (metrics(requests=100, errors=3), metrics(requests=900, errors=9))  # ratio 3
    fine = (metrics(requests=1000, errors=10), metrics(requests=9000, errors=90))
    judgements = run(a, [unlucky, fine, fine, fine])
    assert judgements[0].verdict == "Inconclusive"
    assert "leaning worse" in by_check(judgements[0])["errorRate"].reason
    assert judgements[-1].verdict == "Passed"
    assert "Failed" not in {j.verdict for j in judgements}
    for j in judgements:
        e = of(j, "errorRate")
        held = shown(e).log_lr_worse > 0 or shown(e).log_lr_double > -math.log(CLEAR_ODDS)
        assert (j.verdict == "Inconclusive") == (held and e.decision is None)


# --- (b) clear odds -----------------------------------------------------------------------------


def test_few_paired_errors_hold_until_twice_the_tolerance_is_3_times_less_likely() -> None:
    """As bad as stable (ratio 1), but with 10 errors a window a canary twice as bad as
    tolerated is not yet unlikely enough: the step holds, and passes once the windows add up."""
    a = spec({"errorRate": {}})
    window = (metrics(requests=100, errors=1), metrics(requests=900, errors=9))
    judgements = run(a, [window] * 8)
    verdicts = [j.verdict for j in judgements]
    assert verdicts[0] == "Inconclusive"
    first = by_check(judgements[0])["errorRate"]
    assert first.reason.endswith(f": {NOT_CLEAR}: holding for more evidence")
    released = verdicts.index("Passed")
    assert released >= 1
    assert set(verdicts[released:]) == {"Passed"}
    for j in judgements:
        e = of(j, "errorRate")
        assert e.decision is None
        assert shown(e).log_lr_worse <= 0, "never leaning worse: ratio 1"
        clear = shown(e).log_lr_double <= -math.log(CLEAR_ODDS)
        assert (j.verdict == "Passed") == clear
    m = by_check(judgements[released])["errorRate"]
    assert m.reason.endswith(": not shown worse than 1.5x stable")


def test_one_clear_window_passes_at_once() -> None:
    """Many errors on both sides at the same rate: twice the tolerance is already far less
    likely than the tolerance."""
    a = spec({"errorRate": {}})
    j = judge(a, metrics(requests=1000, errors=10), metrics(requests=9000, errors=90), NOW)
    e = of(j, "errorRate")
    assert shown(e).log_lr_double < -math.log(CLEAR_ODDS)
    assert j.verdict == "Passed", j.summary


def test_stable_errors_alone_can_make_the_odds_clear() -> None:
    """No canary error, but stable erred often enough that a canary twice as bad as tolerated
    would likely have erred: that is evidence for the canary."""
    a = spec({"errorRate": {}})
    few = judge(a, metrics(requests=100), metrics(requests=900, errors=3), NOW)
    assert by_check(few)["errorRate"].verdict == "Inconclusive"
    assert NOT_CLEAR in by_check(few)["errorRate"].reason
    many = judge(a, metrics(requests=100), metrics(requests=900, errors=30), NOW)
    assert by_check(many)["errorRate"].verdict == "Passed"


# --- no events ----------------------------------------------------------------------------------


def test_no_errors_on_either_side_passes() -> None:
    a = spec({"errorRate": {}})
    judgements = run(a, [(metrics(requests=100), metrics(requests=900))] * 3)
    for j in judgements:
        e = of(j, "errorRate")
        assert (e.canary_events, e.stable_events, e.decision) == (0, 0, None)
        # Nothing to compare: twice the tolerance is as likely as the tolerance, and it passes.
        assert shown(e).log_lr_double == 0
        m = by_check(j)["errorRate"]
        assert (j.verdict, m.verdict) == ("Passed", "Passed")
        assert m.reason.endswith(": not shown worse than 1.5x stable")
    assert of(judgements[-1], "errorRate").canary_requests == 300


def test_no_slow_requests_on_either_side_passes() -> None:
    a = spec({"latencyP99": {}})
    edges = [0.1, 0.5]
    stable = metrics(requests=1000, latency_buckets=cumulative([1000, 0, 0], edges))  # p99 0.1
    first = judge(a, stable, stable, NOW)
    j = judge(a, stable, stable, NOW, evidence=first.evidence)
    (e,) = j.evidence
    assert (e.canary_requests, e.canary_events, e.stable_events) == (1000, 0, 0)
    assert j.verdict == "Passed", j.summary


# --- the absolute guard ---------------------------------------------------------------------------


def test_a_canary_over_the_guard_holds_until_shown_even_when_the_ratio_is_fine() -> None:
    """7% of errors against stable's 6%: the ratio is fine, and so clear that the comparison
    alone passes; but 7% is over the guard's 5%, not shown yet: it holds."""
    window = (metrics(requests=1000, errors=70), metrics(requests=9000, errors=540))
    (alone,) = run(spec({"errorRate": {}}), [window])
    assert alone.verdict == "Passed", "the comparison alone passes"
    guarded = spec({"errorRate": {"max": 0.05}})
    (j,) = run(guarded, [window])
    e = of(j, "errorRate")
    assert e.decision is None
    assert shown(e).log_lr_worse <= 0
    m = by_check(j)["errorRate"]
    assert (j.verdict, m.verdict) == ("Inconclusive", "Inconclusive")
    assert m.reason.endswith(": leaning worse than 1.5x stable or over the guard, " + LEANING)
    # The same rate keeps holding until the guard shows it.
    judgements = run(guarded, [window] * 6)
    verdicts = [j.verdict for j in judgements]
    assert "Passed" not in verdicts
    assert verdicts[-1] == "Failed"
    failed = by_check(judgements[verdicts.index("Failed")])["errorRate"]
    assert failed.reason.endswith("shown above the guard 0.05")
    # 4% is under the guard: it passes.
    under = (metrics(requests=1000, errors=40), metrics(requests=9000, errors=300))
    assert [j.verdict for j in run(guarded, [under] * 3)] == ["Passed"] * 3


def test_the_max_ms_guard_leaning_holds_latency() -> None:
    a = spec({"latencyP99": {"maxRatio": 2, "maxMs": 250}})
    edges = [0.1, 0.25, 0.5]
    # 3% over 250 ms (the guard allows 1%), as stable: nothing is over stable's p99 bound,
    # 500 ms, so the comparison has nothing against the canary; the guard holds it.
    stable = metrics(requests=1000, latency_buckets=cumulative([900, 70, 30, 0], edges))
    slowish = metrics(requests=100, latency_buckets=cumulative([90, 7, 3, 0], edges))
    first = judge(a, slowish, stable, NOW)
    assert [e.slow_seconds for e in first.evidence] == [0.5]
    j = judge(a, slowish, stable, NOW, evidence=first.evidence)
    m = by_check(j)["latencyP99"]
    assert m.verdict == "Inconclusive"
    assert m.reason.startswith("slow: over 500 ms; canary 0% (0/100), stable 0% (0/1000)")
    assert m.reason.endswith(": leaning worse than 2x stable or over the guard, " + LEANING)
    e = of(j, "latencyP99")
    assert e.decision is None
    assert (e.guard_requests, e.guard_events) == (200, 6)
    # Within 1% over 250 ms: it passes.
    fast = metrics(requests=100, latency_buckets=cumulative([95, 5, 0, 0], edges))
    judgements = run(a, [(fast, stable)] * 2)
    assert [j.verdict for j in judgements] == ["Passed"] * 2


def test_the_max_ms_guard_leaning_holds_the_first_latency_interval_too() -> None:
    a = spec({"latencyP99": {"maxRatio": 2, "maxMs": 250}})
    edges = [0.1, 0.25, 0.5]
    slowish = metrics(requests=100, latency_buckets=cumulative([90, 7, 3, 0], edges))
    j = judge(a, slowish, slowish, NOW)
    assert of(j, "latencyP99").guard_events == 3
    assert by_check(j)["latencyP99"].verdict == "Inconclusive"


# --- a decided comparison is not held -------------------------------------------------------------


def test_a_comparison_shown_within_tolerance_passes_even_over_the_guard() -> None:
    """Shown within maxRatio (the decision early promotion reads): the hold rules do not apply,
    even though the canary's rate is over the guard's limit (not shown above it)."""
    a = spec({"errorRate": {"max": 0.05}})
    window = (metrics(requests=10000, errors=550), metrics(requests=10000, errors=1100))
    (j,) = run(a, [window])
    e = of(j, "errorRate")
    assert e.decision == "Passed"
    assert e.guard_events > 0.05 * e.guard_requests, "over the guard's limit"
    m = by_check(j)["errorRate"]
    assert (j.verdict, m.verdict) == ("Passed", "Passed")
    assert m.reason.endswith(": shown within 1.5x stable")


def test_hold_gives_way_to_a_decision() -> None:
    """_hold itself: whatever the data lean to, a decided comparison is not held."""
    leaning = sequential.RatioEvidence(
        log_e_harm=1.0,
        log_lr_worse=2.0,
        slope=1.0,
        log_lr_double=1.0,
        log_e_within=0.0,
        lower=None,
        upper=None,
    )
    e = Evidence(check="errorRate", max_ratio=1.5, canary_events=5, stable_events=1)
    assert "leaning worse than 1.5x stable" in _hold(e, leaning, 1.5, None)
    for decision in ("Passed", "Failed"):
        decided = e.model_copy(update={"decision": decision})
        assert _hold(decided, leaning, 1.5, None) == ""
    unclear = sequential.RatioEvidence(0.0, -1.0, -0.5, -1.0, 0.0, None, None)
    assert NOT_CLEAR in _hold(e, unclear, 1.5, None)
    clear = sequential.RatioEvidence(0.0, -1.0, -0.5, -math.log(CLEAR_ODDS) - 1e-9, 0.0, None, None)
    assert _hold(e, clear, 1.5, None) == ""
    # The most likely ratio between the tolerance and the next grid point: a positive slope.
    rising = sequential.RatioEvidence(0.0, -0.1, 0.05, -3.0, 0.0, None, None)
    assert "leaning worse than 1.5x stable" in _hold(e, rising, 1.5, None)
    nothing = Evidence(check="errorRate", max_ratio=1.5)
    assert _hold(nothing, unclear, 1.5, None) == "", "no events: nothing to compare"
    over = e.model_copy(update={"guard_requests": 100.0, "guard_events": 6.0})
    assert "or over the guard" in _hold(over, clear, 1.5, (0.05, 0.01))
    at = e.model_copy(update={"guard_requests": 100.0, "guard_events": 5.0})
    assert _hold(at, clear, 1.5, (0.05, 0.01)) == "", "at the limit is not over it"


# --- drift: counts pooled over the rollout --------------------------------------------------------


REF = {"x": cumulative([0.5, 0.5], [1.0])}


def live(low: float, high: float) -> RevisionMetrics:
    return metrics(
        requests=low + high,
        reference_input_ratios=REF,
        input_feature_buckets={"x": cumulative([low, high], [1.0])},
    )


def test_two_small_windows_of_live_inputs_add_up_to_a_judged_test() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.2}}, min_samples=1)
    first, second = run(a, [(live(15, 15), None), (live(15, 15), None)])
    m = by_check(first)["dataDrift"]
    assert (m.verdict, m.reason) == (
        "Inconclusive",
        "30 live values of 'x' < 40 for a reliable PSI over 2 bins (20 per bin)",
    )
    e = of(first, "dataDrift")
    assert (e.looks, e.pooled_canary) == (0, {"input/x": {"1.0": 15.0, "+Inf": 30.0}})
    m = by_check(second)["dataDrift"]
    assert m.verdict == "Passed"
    assert m.reason.startswith("vs reference, feature 'x' PSI 0, ")
    assert m.reason.endswith(" with 60 observations (look 1)")
    e = of(second, "dataDrift")
    assert (e.looks, e.pooled_canary) == (1, {"input/x": {"1.0": 30.0, "+Inf": 60.0}})
    assert e.pooled_stable == {}


def test_two_small_windows_of_predictions_add_up_to_a_judged_test() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    canary = metrics(prediction_classes=classes({"0": 12, "1": 12}))
    stable = metrics(prediction_classes=classes({"0": 50, "1": 50}))
    first, second = run(a, [(canary, stable), (canary, stable)])
    m = by_check(first)["predictionDrift"]
    assert (m.verdict, m.reason) == (
        "Inconclusive",
        "24 canary predictions of 'label' < 40 for a reliable PSI over 2 bins (20 per bin)",
    )
    assert of(first, "predictionDrift").looks == 0
    m = by_check(second)["predictionDrift"]
    assert m.verdict == "Passed"
    # 48 canary and 200 stable predictions: n_eff 48 * 200 / 248.
    assert m.reason.endswith(f" with {48 * 200 / 248:.4g} observations (look 1)")
    e = of(second, "predictionDrift")
    assert e.looks == 1
    assert e.pooled_canary == {"class/label": {"0": 24.0, "1": 24.0}}
    assert e.pooled_stable == {"class/label": {"0": 100.0, "1": 100.0}}


def test_pooled_regressor_histograms_add_up_per_bucket() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    canary = metrics(prediction_value_buckets={"score": cumulative([10, 15], [1.0])})
    stable = metrics(prediction_value_buckets={"score": cumulative([60, 40], [1.0])})
    first, second = run(a, [(canary, stable), (canary, stable)])
    assert "25 canary predictions of 'score' < 40" in by_check(first)["predictionDrift"].reason
    e = of(second, "predictionDrift")
    assert e.pooled_canary == {"value/score": {"1.0": 20.0, "+Inf": 50.0}}
    assert e.pooled_stable == {"value/score": {"1.0": 120.0, "+Inf": 200.0}}
    assert e.looks == 1
    # 40% | 60% against 60% | 40%: 2 * 0.2 ln 1.5, below maxPSI.
    m = by_check(second)["predictionDrift"]
    assert (m.verdict, m.value) == ("Passed", pytest.approx(0.4 * math.log(1.5), abs=1e-5))


def test_pooled_counts_round_trip_through_metrics_and_the_status() -> None:
    m = RevisionMetrics(
        requests=130,
        prediction_classes={("label", "a"): 40.0, ("label", "b/c"): 90.0, ("kind", "x"): 3.0},
        prediction_value_buckets={"score": {0.5: 10.0, 2.0: 60.0, INF: 130.0}},
        input_feature_buckets={"x": {1e-3: 1.0, 1.0: 50.0, INF: 130.0}, "y/z": {INF: 130.0}},
    )
    counts = pooled_counts(m)
    assert counts == {
        "class/label": {"a": 40.0, "b/c": 90.0},
        "class/kind": {"x": 3.0},
        "value/score": {"0.5": 10.0, "2.0": 60.0, "+Inf": 130.0},
        "input/x": {"0.001": 1.0, "1.0": 50.0, "+Inf": 130.0},
        "input/y/z": {"+Inf": 130.0},
    }
    back = pooled_metrics(counts)
    assert back.prediction_classes == m.prediction_classes
    assert back.prediction_value_buckets == m.prediction_value_buckets
    assert back.input_feature_buckets == m.input_feature_buckets
    assert pooled_counts(back) == counts
    assert pooled_counts(RevisionMetrics()) == {}
    assert pooled_metrics({}) == RevisionMetrics()
    # Through the status (camelCase JSON) and back, as the evidence is kept between intervals.
    e = Evidence(check="predictionDrift", looks=2, pooled_canary=counts, pooled_stable=counts)
    data = e.to_dict()
    assert data["pooledCanary"]["input/x"] == {"0.001": 1.0, "1.0": 50.0, "+Inf": 130.0}
    again = Evidence.model_validate(data)
    assert again == e
    assert pooled_metrics(again.pooled_canary).input_feature_buckets == m.input_feature_buckets


def test_a_window_without_canary_predictions_adds_no_look_and_pools_nothing() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    even = metrics(prediction_classes=classes({"0": 500, "1": 500}))
    (judged,) = run(a, [(even, even)])
    before = of(judged, "predictionDrift")
    assert before.looks == 1
    skewed_stable = metrics(prediction_classes=classes({"0": 900, "1": 100}))
    for canary in (metrics(), metrics(requests=0), None):
        (j,) = run(a, [(canary, skewed_stable)], judged.evidence)
        m = by_check(j)["predictionDrift"]
        assert m.verdict == "Inconclusive"
        assert of(j, "predictionDrift") == before, "no look, nothing pooled (stable neither)"
    # Stable with too few requests: nothing pooled either.
    few = RevisionMetrics(requests=10, prediction_classes=classes({"0": 10}))
    (j,) = run(a, [(even, few)], judged.evidence)
    assert by_check(j)["predictionDrift"].verdict == "Inconclusive"
    assert of(j, "predictionDrift") == before
    # The next window with data is the second look, pooled with the first.
    (j,) = run(a, [(even, even)], judged.evidence)
    after = of(j, "predictionDrift")
    assert after.looks == 2
    assert after.pooled_canary == {"class/label": {"0": 1000.0, "1": 1000.0}}


def test_a_window_of_zero_canary_predictions_pools_no_stable_predictions() -> None:
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    even = metrics(prediction_classes=classes({"0": 500, "1": 500}))
    (judged,) = run(a, [(even, even)])
    zero = metrics(requests=0, prediction_classes=classes({"0": 0, "1": 0}))
    skewed_stable = metrics(prediction_classes=classes({"0": 900, "1": 100}))
    (j,) = run(a, [(zero, skewed_stable)], judged.evidence)
    assert of(j, "predictionDrift").pooled_stable == of(judged, "predictionDrift").pooled_stable


def test_a_window_without_live_inputs_adds_no_look() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.2}}, min_samples=1)
    (judged,) = run(a, [(live(500, 500), None)])
    before = of(judged, "dataDrift")
    assert before.looks == 1
    for canary in (live(0, 0), metrics(reference_input_ratios=REF), None):
        (j,) = run(a, [(canary, None)], judged.evidence)
        assert by_check(j)["dataDrift"].verdict == "Inconclusive"
        assert of(j, "dataDrift") == before


def test_drift_above_max_psi_within_the_noise_holds_until_shown() -> None:
    """PSI 0.27 against maxPSI 0.2 over 500 predictions a side is within the noise: not shown,
    but above maxPSI, so it holds; pooled over more windows it is shown."""
    a = spec({"predictionDrift": {"maxPSI": 0.2}})
    shifted = metrics(prediction_classes=classes({"0": 125, "1": 375}))
    even = metrics(prediction_classes=classes({"0": 250, "1": 250}))
    judgements = run(a, [(shifted, even)] * 20)
    verdicts = [j.verdict for j in judgements]
    assert "Passed" not in verdicts
    first_failed = verdicts.index("Failed")
    assert first_failed >= 1
    for look, j in enumerate(judgements[:first_failed], start=1):
        m = by_check(j)["predictionDrift"]
        assert m.value == pytest.approx(0.274653, abs=1e-6)
        assert m.reason.endswith(f"(look {look}){DRIFT_HOLD}")
    assert set(verdicts[first_failed:]) == {"Failed"}
    # Below maxPSI within the noise: it passes.
    near = metrics(prediction_classes=classes({"0": 40, "1": 60}))
    m = by_check(judge(a, near, even, NOW))["predictionDrift"]
    assert 0 < (m.value or 0) < 0.2
    assert (m.verdict, m.reason.endswith(DRIFT_HOLD)) == ("Passed", False)


def test_data_drift_above_max_psi_within_the_noise_holds() -> None:
    a = spec({"dataDrift": {"maxPSI": 0.1}}, min_samples=1)
    (j,) = run(a, [(live(69, 31), None)])
    m = by_check(j)["dataDrift"]
    assert (m.verdict, m.value) == ("Inconclusive", pytest.approx(0.1520, abs=1e-3))
    assert m.reason.endswith(DRIFT_HOLD)
    assert of(j, "dataDrift").decision is None
