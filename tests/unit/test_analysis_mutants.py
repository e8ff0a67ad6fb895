"""Exact values and boundaries of the analysis's sequential tests and judge, pinned where the
looser property tests of test_analysis_sequential.py and test_analysis_judge.py leave room:
every expected value is computed here from its definition (a closed form, or a brute-force
solver or sum written in this file), independently of the code."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import pytest
from canarium.analysis import RevisionMetrics
from canarium.analysis.judge import (
    INCONCLUSIVE,
    check_data_drift,
    check_prediction_drift,
    slow_bound,
)
from canarium.analysis.sequential import (
    GRID_HALF,
    GRID_SIZE,
    add_interval,
    chi2_quantile,
    empty_log_likelihood,
    poisson_upper_bound,
    psi_critical,
    rate_above_limit,
    ratio_evidence,
)

# --- the log-likelihood of one interval -------------------------------------------------------


def test_an_interval_with_a_single_event_or_a_single_stable_request_is_evidence() -> None:
    # One event in all (canary 1, stable 0): the likelihood of every ratio is its canary share.
    ll = add_interval(empty_log_likelihood(), 1.0, (100.0, 1.0), (100.0, 0.0))
    shares = [100 * 1.25 ** (j - GRID_HALF) for j in range(GRID_SIZE)]
    shares = [w / (w + 100) for w in shares]
    top = max(math.log(s) for s in shares)
    assert ll == pytest.approx([math.log(s) - top for s in shares], abs=1e-12)
    # Stable with a single request (and one error) is compared just as well.
    ll = add_interval(empty_log_likelihood(), 1.0, (100.0, 0.0), (1.0, 1.0))
    stable = [math.log(1 / (100 * 1.25 ** (j - GRID_HALF) + 1)) for j in range(GRID_SIZE)]
    assert ll == pytest.approx([v - max(stable) for v in stable], abs=1e-12)


def test_an_interval_without_events_returns_the_evidence_exactly_as_given() -> None:
    # Whatever the caller's state (here not shifted to a maximum of 0, as after summing two
    # states), an interval that says nothing leaves it as it was.
    state = [float(j) for j in range(GRID_SIZE)]
    assert add_interval(state, 1.5, (100.0, 0.0), (100.0, 0.0)) == state


# --- the Poisson upper bound --------------------------------------------------------------------


def chernoff_upper(x: float, delta: float) -> float:
    """The largest m >= x with m - x + x log(x / m) <= log(1 / delta), by plain bisection."""
    budget = math.log(1 / delta)

    def excess(m: float) -> float:
        return m - x + (x * math.log(x / m) if x > 0 else 0.0) - budget

    if x == 0:
        return budget
    low, high = x, x + 1.0
    while excess(high) < 0:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return high


@pytest.mark.parametrize(
    ("events", "delta"),
    [
        (0.0, 0.5),  # no event, little confidence: the bound log(2) lies below 1
        (0.0, 0.9),
        (0.3, 0.5),  # a fraction of an event (counters are rates times durations)
        (0.5, 0.9999),  # almost no confidence: just above the events themselves
        (0.5, 1e-6),  # much confidence: far above them
        (1.0, 0.05),
        (1.0, 1e-9),
        (3.0, 0.05),
        (250.0, 0.001),
    ],
)
def test_poisson_upper_bound_solves_chernoffs_equation(events: float, delta: float) -> None:
    bound = poisson_upper_bound(events, 400.0, delta)
    assert bound == pytest.approx(chernoff_upper(events, delta) / 400.0, rel=1e-9)


def test_poisson_upper_bound_at_no_confidence_is_the_estimate_itself() -> None:
    assert poisson_upper_bound(5.0, 100.0, 1.0) == pytest.approx(0.05, rel=1e-7)
    assert poisson_upper_bound(0.0, 100.0, 1.0) == pytest.approx(0.0, abs=1e-12)


# --- the confidence sequence and the slope ----------------------------------------------------


def reference_interval(
    ll: list[float], tolerance: float, alpha: float
) -> tuple[float | None, float | None]:
    """The confidence sequence from its definition: grid point k is rejected when the mean,
    weighted 1/GRID_HALF each, of the likelihood ratios L(j)/L(k) over the up to GRID_HALF
    points on one side reaches 2 / alpha; the interval runs to the next rejected point on
    either side of the points kept (None: no such point on the grid)."""
    ratios = [tolerance * 1.25 ** (j - GRID_HALF) for j in range(GRID_SIZE)]

    def side(k: int, indices: range) -> float:
        return math.fsum(math.exp(ll[j] - ll[k]) for j in indices) / GRID_HALF

    kept = [
        k
        for k in range(GRID_SIZE)
        if side(k, range(k + 1, min(k + GRID_HALF, GRID_SIZE - 1) + 1)) < 2 / alpha
        and side(k, range(max(k - GRID_HALF, 0), k)) < 2 / alpha
    ]
    if not kept:
        return None, None
    lower = ratios[kept[0] - 1] if kept[0] > 0 else None
    upper = ratios[kept[-1] + 1] if kept[-1] < GRID_SIZE - 1 else None
    return lower, upper


def evidence_of(intervals: list[tuple[tuple[float, float], tuple[float, float]]]) -> list[float]:
    ll = empty_log_likelihood()
    for canary, stable in intervals:
        ll = add_interval(ll, 1.5, canary, stable)
    return ll


CASES = {
    "equal rates, much data": [((1000.0, 20.0), (1000.0, 20.0))] * 5,
    "3x worse, little data": [((200.0, 6.0), (200.0, 2.0))],
    "a few errors": [((100.0, 2.0), (300.0, 3.0))],
    "a canary without errors": [((500.0, 0.0), (500.0, 12.0))],
    "a canary far better": [((1000.0, 0.0), (1000.0, 60.0))] * 2,
    "a canary far worse": [((1000.0, 60.0), (1000.0, 0.0))] * 2,
    "a canary that errs alone": [((1000.0, 9.0), (1000.0, 0.0))],
    "a little worse": [((2000.0, 30.0), (2000.0, 20.0))] * 3,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_confidence_sequence_is_the_set_of_ratios_not_rejected(case: str) -> None:
    ll = evidence_of(CASES[case])
    for i in range(120):
        alpha = 10 ** (-0.05 * i)  # 1 down to 1e-6
        shown = ratio_evidence(ll, 1.5, alpha)
        expected = reference_interval(ll, 1.5, alpha)
        for got, want in zip((shown.lower, shown.upper), expected, strict=True):
            assert got == (None if want is None else pytest.approx(want, rel=1e-12)), alpha


def test_a_ratio_whose_test_reaches_two_over_alpha_exactly_is_rejected() -> None:
    """Ville's inequality bounds the chance of ever reaching 1/alpha: reaching it rejects."""
    alpha = 0.01
    c = math.log(2.0 / alpha)
    ratios = [1.5 * 1.25 ** (j - GRID_HALF) for j in range(GRID_SIZE)]
    # Point 19's ratios above it are exactly 2/alpha as likely; all below it far less.
    ll = [-50.0] * 19 + [-c] + [0.0] * (GRID_SIZE - 20)
    shown = ratio_evidence(ll, 1.5, alpha)
    assert (shown.lower, shown.upper) == (pytest.approx(ratios[19]), None)
    # The mirror image: point 21's ratios below it are exactly 2/alpha as likely.
    ll = [0.0] * 21 + [-c] + [-50.0] * (GRID_SIZE - 22)
    shown = ratio_evidence(ll, 1.5, alpha)
    assert (shown.lower, shown.upper) == (None, pytest.approx(ratios[21]))


def test_the_interval_ends_at_the_grid_point_rejected_at_either_edge() -> None:
    ratios = [1.5 * 1.25 ** (j - GRID_HALF) for j in range(GRID_SIZE)]
    # Only the lowest ratio of the grid is rejected: it is the lower bound.
    shown = ratio_evidence([-50.0] + [0.0] * (GRID_SIZE - 1), 1.5, 0.01)
    assert (shown.lower, shown.upper) == (pytest.approx(ratios[0]), None)
    # Only the highest: the upper bound.
    shown = ratio_evidence([0.0] * (GRID_SIZE - 1) + [-50.0], 1.5, 0.01)
    assert (shown.lower, shown.upper) == (None, pytest.approx(ratios[-1]))


def test_the_slope_is_the_central_difference_of_the_paired_and_reference_evidence() -> None:
    ll = evidence_of([((1000.0, 14.0), (1000.0, 11.0))])
    events, requests, rate = 25.0, 1500.0, 0.012
    ratios = [1.5 * 1.25 ** (j - GRID_HALF) for j in range(GRID_SIZE)]

    def total(j: int) -> float:
        reference = events * math.log(ratios[j] / 1.5) - requests * rate * (ratios[j] - 1.5)
        return ll[j] + reference

    shown = ratio_evidence(ll, 1.5, 0.01, reference=(events, requests, rate))
    assert shown.slope == pytest.approx((total(GRID_HALF + 1) - total(GRID_HALF - 1)) / 2)
    assert shown.log_lr_worse == pytest.approx(
        max(total(j) - total(GRID_HALF) for j in range(GRID_HALF + 1, GRID_SIZE))
    )


# --- the absolute guard -----------------------------------------------------------------------


def poisson_mixture(events: float, requests: float, limit: float) -> float:
    """log of the mean over j = 1..20 of the Poisson likelihood ratios of limit * 1.25^j."""
    terms = [
        events * j * math.log(1.25) - requests * limit * (1.25**j - 1)
        for j in range(1, GRID_HALF + 1)
    ]
    top = max(terms)
    return top + math.log(math.fsum(math.exp(t - top) for t in terms) / GRID_HALF)


@pytest.mark.parametrize(
    ("events", "requests", "limit"),
    [
        (10.0, 1000.0, 0.01),  # at the limit: every alternative less likely
        (0.0, 500.0, 0.02),  # no event
        (1.0, 1.0, 0.01),  # a single request
        (0.0, 0.5, 0.01),  # less than one (a rate times a short window)
        (100.0, 100.0, 0.01),  # every request failed, against 1%: the farthest alternatives
        (50.0, 1000.0, 0.001),
    ],
)
def test_rate_above_limit_is_the_mixture_over_twenty_alternatives(
    events: float, requests: float, limit: float
) -> None:
    assert rate_above_limit(events, requests, limit) == pytest.approx(
        poisson_mixture(events, requests, limit), rel=1e-12, abs=1e-12
    )


# --- drift --------------------------------------------------------------------------------------


def patnaik_wilson_hilferty(p: float, dof: float, noncentrality: float) -> float:
    """Patnaik: noncentral chi-square(k, l) ~ c chi-square(f), c = (k + 2l) / (k + l),
    f = (k + l)^2 / (k + 2l); Wilson & Hilferty: the p-quantile of chi-square(f) is about
    f (1 - 2/(9f) + z_p sqrt(2/(9f)))^3."""
    c = (dof + 2 * noncentrality) / (dof + noncentrality)
    f = (dof + noncentrality) ** 2 / (dof + 2 * noncentrality)
    z = NormalDist().inv_cdf(p)
    return c * f * max(1 - 2 / (9 * f) + z * math.sqrt(2 / (9 * f)), 0.0) ** 3


@pytest.mark.parametrize(
    ("p", "dof", "noncentrality"),
    [(0.95, 1, 0.0), (0.99, 4, 0.0), (0.5, 2, 3.0), (0.999, 9, 200.0), (0.99, 1, 0.5)],
)
def test_chi2_quantile_is_patnaik_with_wilson_hilferty(
    p: float, dof: int, noncentrality: float
) -> None:
    assert chi2_quantile(p, dof, noncentrality) == pytest.approx(
        patnaik_wilson_hilferty(p, dof, noncentrality), rel=1e-12
    )


def test_chi2_quantile_refuses_no_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match=r"^degrees of freedom must be positive$"):
        chi2_quantile(0.95, 0)


@pytest.mark.parametrize("bins", [1, 2, 3, 10])
def test_psi_critical_has_one_degree_of_freedom_less_than_bins_and_at_least_one(
    bins: int,
) -> None:
    dof = max(bins - 1, 1)
    assert psi_critical(0.1, 500.0, bins, 0.01) == pytest.approx(
        patnaik_wilson_hilferty(0.99, dof, 50.0) / 500.0, rel=1e-12
    )


# --- the judge's drift checks and latency histograms -------------------------------------------


def test_slow_bound_needs_observations_counted_in_the_inf_bucket() -> None:
    # Finite buckets without a +Inf total: no observations to take a percentile of.
    assert slow_bound({0.1: 5.0, 0.5: 10.0}) is None
    assert slow_bound({0.1: 0.0, 0.5: 0.0, math.inf: 0.0}) is None
    # A single observation is enough.
    assert slow_bound({0.1: 1.0, 0.5: 1.0, math.inf: 1.0}) == 0.1


def drift(canary: RevisionMetrics, stable: RevisionMetrics) -> Any:
    return check_prediction_drift(canary, stable, limit=0.2, min_samples=10)


@pytest.mark.parametrize("kind", ["value", "class"])
def test_prediction_drift_names_the_side_without_predictions_of_an_output(kind: str) -> None:
    def side(output: str, count: float) -> RevisionMetrics:
        if kind == "value":
            buckets = {output: {1.0: count, math.inf: count}}
            return RevisionMetrics(requests=100.0, prediction_value_buckets=buckets)
        return RevisionMetrics(requests=100.0, prediction_classes={(output, "x"): count})

    # The canary predicted output "a" (once), stable only "b": stable has none of "a".
    result = drift(side("a", 1.0), side("b", 30.0))
    assert (result.verdict, result.reason) == (
        INCONCLUSIVE,
        "no predictions of output 'a' from stable",
    )
    assert result.evidence is not None
    result = drift(side("b", 30.0), side("a", 30.0))
    assert result.reason == "no predictions of output 'a' from canary"


def test_prediction_drift_without_predictions_in_the_window_keeps_the_evidence() -> None:
    empty = RevisionMetrics(requests=100.0, prediction_value_buckets={"score": {1.0: 0.0}})
    some = RevisionMetrics(
        requests=100.0, prediction_value_buckets={"score": {1.0: 30.0, math.inf: 30.0}}
    )
    result = drift(empty, some)
    assert (result.verdict, result.reason) == (INCONCLUSIVE, "no canary predictions in this window")
    assert result.evidence is not None
    assert result.evidence.check == "predictionDrift"


def test_data_drift_without_live_inputs_keeps_the_evidence() -> None:
    reference = {"x": {1.0: 0.5, math.inf: 1.0}}
    # A feature histogram without a +Inf total observed nothing.
    canary = RevisionMetrics(
        input_feature_buckets={"x": {1.0: 3.0}}, reference_input_ratios=reference
    )
    result = check_data_drift(canary, limit=0.2)
    assert (result.verdict, result.reason) == (INCONCLUSIVE, "no live input observations")
    assert result.evidence is not None
    assert result.evidence.check == "dataDrift"
    # Observations only of a feature without reference statistics: none to compare.
    canary = RevisionMetrics(
        input_feature_buckets={"x": {1.0: 0.0, math.inf: 0.0}, "y": {1.0: 5.0, math.inf: 9.0}},
        reference_input_ratios=reference,
    )
    result = check_data_drift(canary, limit=0.2)
    assert (result.verdict, result.reason) == (INCONCLUSIVE, "no live input observations")
    # Live buckets that do not line up with the reference's: said so, the evidence kept.
    canary = RevisionMetrics(
        input_feature_buckets={"x": {7.0: 30.0, math.inf: 30.0}},
        reference_input_ratios={"x": {1.0: 0.5, 2.0: 0.7, math.inf: 1.0}},
    )
    result = check_data_drift(canary, limit=0.2)
    assert result.reason == "feature 'x': live and reference buckets differ"
    assert result.evidence is not None
