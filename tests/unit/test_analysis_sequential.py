"""The sequential tests behind the analysis (canarium.analysis.sequential): the mixture SPRT of
a rate ratio, its confidence sequence, the Poisson bounds and guards, and the drift test's
critical values. Expected values are computed here from their definitions, independently of
the code; the simulations use a fixed seed (deterministic) and check the promised error rates
with a little room for Monte Carlo."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from canarium.analysis import sequential
from canarium.analysis.sequential import (
    GRID_HALF,
    GRID_SIZE,
    add_interval,
    chi2_quantile,
    empty_log_likelihood,
    grid_ratios,
    look_alpha,
    poisson_upper_bound,
    psi_critical,
    rate_above_limit,
    ratio_evidence,
)

# --- the grid and the log-likelihood ----------------------------------------------------------


@pytest.mark.parametrize("tolerance", [1.0, 1.5, 3.0])
def test_the_grid_is_centred_on_the_tolerance_with_ratios_25_percent_apart(
    tolerance: float,
) -> None:
    ratios = grid_ratios(tolerance)
    assert len(ratios) == GRID_SIZE == 2 * GRID_HALF + 1
    assert ratios[GRID_HALF] == pytest.approx(tolerance)
    for low, high in itertools.pairwise(ratios):
        assert high / low == pytest.approx(1.25)
    assert ratios[0] == pytest.approx(tolerance / 1.25**GRID_HALF)
    assert ratios[-1] == pytest.approx(tolerance * 1.25**GRID_HALF)
    assert empty_log_likelihood() == [0.0] * GRID_SIZE


def binomial_log_likelihood(
    ratio: float, canary: tuple[float, float], stable: tuple[float, float]
) -> float:
    """log P(the canary's share of the interval's events | their total) when its rate is
    `ratio` times stable's: Binomial(total, n_c r / (n_c r + n_s)), without the constant."""
    (n_c, x_c), (n_s, x_s) = canary, stable
    share = n_c * ratio / (n_c * ratio + n_s)
    return x_c * math.log(share) + x_s * math.log(1 - share)


def test_an_interval_adds_the_conditional_binomial_log_likelihood_of_every_ratio() -> None:
    tolerance = 1.5
    canary, stable = (100.0, 6.0), (300.0, 4.0)
    ll = add_interval(empty_log_likelihood(), tolerance, canary, stable)
    ratios = grid_ratios(tolerance)
    expected = [binomial_log_likelihood(r, canary, stable) for r in ratios]
    # Only differences matter (the code keeps the maximum at 0).
    assert max(ll) == 0.0
    for j in range(GRID_SIZE):
        assert ll[j] - ll[GRID_HALF] == pytest.approx(expected[j] - expected[GRID_HALF])
    # The most likely ratio is the grid point nearest the estimate (6/100) / (4/300) = 4.5.
    best = max(range(GRID_SIZE), key=lambda j: ll[j])
    assert ratios[best] == pytest.approx(min(ratios, key=lambda r: abs(math.log(r / 4.5))))
    # Intervals add up, in any order.
    other = ((50.0, 1.0), (50.0, 3.0))
    ab = add_interval(ll, tolerance, *other)
    ba = add_interval(
        add_interval(empty_log_likelihood(), tolerance, *other), tolerance, canary, stable
    )
    assert ab == pytest.approx(ba)


@pytest.mark.parametrize(
    ("canary", "stable"),
    [
        ((0.0, 0.0), (100.0, 3.0)),  # the canary took no request
        ((100.0, 3.0), (0.0, 0.0)),  # stable took none (weight 100, the bake)
        ((100.0, 0.0), (100.0, 0.0)),  # no event on either side
    ],
)
def test_an_interval_that_says_nothing_about_the_ratio_changes_nothing(
    canary: tuple[float, float], stable: tuple[float, float]
) -> None:
    before = add_interval(empty_log_likelihood(), 1.5, (100.0, 5.0), (100.0, 2.0))
    after = add_interval(before, 1.5, canary, stable)
    assert after == before
    assert after is not before, "a new list: the caller's evidence is not changed in place"


# --- the mixture tests and the confidence sequence --------------------------------------------


def mixture_log_e(ll: list[float], indices: range, at: int) -> float:
    """log of the mean, with weight 1/GRID_HALF each, of the likelihood ratios L(j)/L(at)."""
    return math.log(sum(math.exp(ll[j] - ll[at]) for j in indices) / GRID_HALF)


def test_the_e_values_are_uniform_mixtures_of_likelihood_ratios_against_the_tolerance() -> None:
    ll = add_interval(empty_log_likelihood(), 2.0, (200.0, 9.0), (200.0, 3.0))
    shown = ratio_evidence(ll, 2.0, alpha=0.01)
    assert shown.log_e_harm == pytest.approx(
        mixture_log_e(ll, range(GRID_HALF + 1, GRID_SIZE), GRID_HALF)
    )
    assert shown.log_e_within == pytest.approx(mixture_log_e(ll, range(GRID_HALF), GRID_HALF))
    # No evidence: every likelihood ratio is 1, and so is each mixture.
    nothing = ratio_evidence(empty_log_likelihood(), 2.0, alpha=0.01)
    assert nothing.log_e_harm == pytest.approx(0.0)
    assert nothing.log_e_within == pytest.approx(0.0)
    assert (nothing.lower, nothing.upper) == (None, None), "nothing excluded: [0, inf]"


def evidence_over(
    intervals: int, canary_errors: float, stable_errors: float
) -> list[sequential.RatioEvidence]:
    """The evidence after each of `intervals` intervals of 1000 requests per revision."""
    ll = empty_log_likelihood()
    out = []
    for _ in range(intervals):
        ll = add_interval(ll, 1.5, (1000.0, canary_errors), (1000.0, stable_errors))
        out.append(ratio_evidence(ll, 1.5, alpha=0.01))
    return out


def test_the_harm_e_value_grows_with_a_worse_canary_and_not_with_an_equal_one() -> None:
    bound = math.log(2 / 0.01)
    worse = evidence_over(10, canary_errors=30, stable_errors=10)  # 3x stable
    harms = [e.log_e_harm for e in worse]
    assert harms == sorted(harms), "every interval of a 3x worse canary adds evidence"
    assert harms[0] < bound <= harms[-1]
    assert all(e.log_e_within < 0 for e in worse)
    assert worse[-1].lower is not None
    assert 1.5 < worse[-1].lower < 3 < (worse[-1].upper or math.inf)
    equal = evidence_over(10, canary_errors=30, stable_errors=30)
    harms = [e.log_e_harm for e in equal]
    assert harms == sorted(harms, reverse=True), "an equal canary: the evidence of harm fades"
    assert harms[-1] < -5
    # ... and it is shown within the tolerance of 1.5 (early promotion may follow).
    assert equal[-1].log_e_within >= bound
    assert equal[-1].upper is not None
    assert (equal[-1].lower or 0.0) < 1 < equal[-1].upper <= 1.5


def test_the_reference_rate_counts_towards_harm_only() -> None:
    ll = add_interval(empty_log_likelihood(), 1.5, (500.0, 5.0), (500.0, 5.0))
    without = ratio_evidence(ll, 1.5, alpha=0.01)
    # 40 errors in 1000 canary requests without stable traffic, against stable's 1%.
    bad = ratio_evidence(ll, 1.5, alpha=0.01, reference=(40.0, 1000.0, 0.01))
    assert bad.log_e_harm > math.log(2 / 0.01) > without.log_e_harm
    # The Poisson likelihood ratio of each alternative, times the paired one.
    ratios = grid_ratios(1.5)
    terms = [
        ll[j] - ll[GRID_HALF] + 40 * math.log(ratios[j] / 1.5) - 1000 * 0.01 * (ratios[j] - 1.5)
        for j in range(GRID_HALF + 1, GRID_SIZE)
    ]
    expected = math.log(sum(math.exp(t) for t in terms) / GRID_HALF)
    assert bad.log_e_harm == pytest.approx(expected)
    # It never shows the canary within tolerance, nor moves the interval.
    good = ratio_evidence(ll, 1.5, alpha=0.01, reference=(0.0, 100000.0, 0.01))
    for shown in (bad, good):
        assert (shown.log_e_within, shown.lower, shown.upper) == (
            without.log_e_within,
            without.lower,
            without.upper,
        )
    # A reference rate of zero (stable never erred, no bound) is no reference.
    assert ratio_evidence(ll, 1.5, 0.01, reference=(40.0, 1000.0, 0.0)) == without


# --- simulations ------------------------------------------------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def simulate(
    ratio: float,
    tolerance: float,
    alpha: float,
    runs: int,
    seed: int,
    until: Callable[[sequential.RatioEvidence], bool] | None = None,
    intervals: int = 40,
    requests: int = 200,
    stable_rate: float = 0.02,
) -> tuple[float, float, float]:
    """Rollouts of `intervals` intervals of `requests` requests, the canary at 10% of them for
    the first half and 50% after, its error rate `ratio` times stable's: the share of runs
    where harm was shown at some look, where the canary was shown within tolerance at some
    look, and where the confidence sequence missed the true ratio at some look. `until` ends a
    run early."""
    rng = random.Random(seed)
    harm = within = missed = 0
    bound = math.log(2 / alpha)
    for _ in range(runs):
        ll = empty_log_likelihood()
        shown_harm = shown_within = miss = False
        for i in range(intervals):
            n_c = round(requests * (0.1 if i < intervals // 2 else 0.5))
            n_s = requests - n_c
            canary = (float(n_c), float(binomial(rng, n_c, stable_rate * ratio)))
            stable = (float(n_s), float(binomial(rng, n_s, stable_rate)))
            ll = add_interval(ll, tolerance, canary, stable)
            shown = ratio_evidence(ll, tolerance, alpha)
            shown_harm = shown_harm or shown.log_e_harm >= bound
            shown_within = shown_within or shown.log_e_within >= bound
            low = 0.0 if shown.lower is None else shown.lower
            high = math.inf if shown.upper is None else shown.upper
            miss = miss or not low <= ratio <= high
            if until is not None and until(shown):
                break
        harm += shown_harm
        within += shown_within
        missed += miss
    return harm / runs, within / runs, missed / runs


def test_an_equal_canary_at_the_tolerance_is_rarely_rejected_however_often_looked_at() -> None:
    """Equal rates with maxRatio 1, the hardest case for both one-sided tests: each rejects in
    at most alpha of the runs over all 40 looks (Ville's inequality, at alpha / 2 each)."""
    alpha = 0.05
    harm, within, _ = simulate(1.0, tolerance=1.0, alpha=alpha, runs=200, seed=11)
    assert harm <= alpha / 2 + 0.01
    assert within <= alpha / 2 + 0.01


def test_the_confidence_sequence_covers_a_ratio_between_grid_points() -> None:
    """Equal rates and maxRatio 1.5: the true ratio 1 lies between the grid points 0.96 and
    1.2. The interval must hold it at every look in at least 1 - alpha of the runs."""
    alpha = 0.05
    harm, _, missed = simulate(1.0, tolerance=1.5, alpha=alpha, runs=200, seed=7)
    assert missed <= alpha * 1.2  # a little Monte Carlo room (200 runs)
    assert harm <= alpha / 2


@pytest.mark.parametrize(("ratio", "at_least"), [(3.0, 0.8), (10.0, 1.0)])
def test_a_worse_canary_is_detected(ratio: float, at_least: float) -> None:
    alpha = 0.01
    bound = math.log(2 / alpha)
    harm, within, _ = simulate(
        ratio, tolerance=1.5, alpha=alpha, runs=100, seed=3, until=lambda e: e.log_e_harm >= bound
    )
    assert harm >= at_least
    assert within == 0.0


# --- Poisson bounds and the absolute guard ------------------------------------------------------


def poisson_cdf(x: int, mean: float) -> float:
    term = total = math.exp(-mean)
    for k in range(1, x + 1):
        term *= mean / k
        total += term
    return total


def exact_poisson_upper(x: int, delta: float) -> float:
    """The exact (Clopper-Pearson style) upper bound: the mean with P(X <= x) = delta."""
    low, high = float(x), float(x) + 100.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if poisson_cdf(x, mid) > delta else (low, mid)
    return high


def test_poisson_upper_bound() -> None:
    assert poisson_upper_bound(3, 0, 0.05) is None
    # No event: P(X = 0) = exp(-m) <= delta from m = log(1 / delta) on (exact, not only Chernoff).
    assert poisson_upper_bound(0, 1000, 0.05) == pytest.approx(math.log(20) / 1000, rel=1e-9)
    assert exact_poisson_upper(0, 0.05) == pytest.approx(math.log(20), rel=1e-9)
    # 10 events, delta 0.05: the exact bound is 16.96 (chi-square(22) 0.95 quantile / 2).
    exact = exact_poisson_upper(10, 0.05)
    assert exact == pytest.approx(16.96, abs=0.01)
    bound = poisson_upper_bound(10, 1.0, 0.05)
    assert bound is not None
    # Chernoff's bound: valid (above the exact one), not much looser, and solves its equation.
    assert exact <= bound <= exact * 1.25
    assert bound - 10 + 10 * math.log(10 / bound) == pytest.approx(math.log(20), abs=1e-6)
    # A rate: per request.
    per_request = poisson_upper_bound(10, 2000.0, 0.05)
    assert per_request == pytest.approx(bound / 2000)
    # More confidence, a higher bound; more events, a higher bound.
    assert poisson_upper_bound(10, 1.0, 0.001) > bound  # type: ignore[operator]
    assert poisson_upper_bound(20, 1.0, 0.05) > bound  # type: ignore[operator]


def test_rate_above_limit() -> None:
    # A limit of 1: every request may fail; never exceeded.
    assert rate_above_limit(100, 100, 1.0) == -math.inf
    assert rate_above_limit(5, 0, 0.01) == -math.inf
    # A limit of 0: a single event exceeds it; none does not.
    assert rate_above_limit(1, 1000, 0.0) == math.inf
    assert rate_above_limit(0, 1000, 0.0) == -math.inf
    # The mixture of Poisson likelihood ratios over limit * 1.25^j, j = 1..20.
    events, requests, limit = 30.0, 1000.0, 0.01
    terms = [
        events * math.log(1.25**j) - requests * limit * (1.25**j - 1)
        for j in range(1, GRID_HALF + 1)
    ]
    expected = math.log(sum(math.exp(t) for t in terms) / GRID_HALF)
    assert rate_above_limit(events, requests, limit) == pytest.approx(expected)
    # 3% against 1% over 1000 requests is shown; 1% is not, nor 2% over 100.
    assert rate_above_limit(30, 1000, 0.01) > math.log(100)
    assert rate_above_limit(10, 1000, 0.01) < 0
    assert rate_above_limit(2, 100, 0.01) < math.log(100)


# --- drift --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "dof", "known", "rel"),
    [
        # Published quantiles of the chi-square distribution.
        (0.95, 1, 3.841, 0.03),  # Wilson-Hilferty is at its worst at one degree of freedom
        (0.99, 1, 6.635, 0.03),
        (0.95, 2, 5.991, 0.02),
        (0.99, 10, 23.209, 0.02),
        (0.5, 5, 4.351, 0.02),
        (0.999, 30, 59.703, 0.02),
    ],
)
def test_chi2_quantile_of_central_chi_square(p: float, dof: int, known: float, rel: float) -> None:
    assert chi2_quantile(p, dof) == pytest.approx(known, rel=rel)


def test_chi2_quantile_of_noncentral_chi_square_against_a_simulation() -> None:
    rng = random.Random(5)
    dof, noncentrality = 3, 20.0
    shift = math.sqrt(noncentrality)  # all of it on the first coordinate
    draws = sorted(
        (rng.gauss(0, 1) + shift) ** 2 + sum(rng.gauss(0, 1) ** 2 for _ in range(dof - 1))
        for _ in range(20000)
    )
    for p in (0.5, 0.95, 0.99):
        simulated = draws[int(p * len(draws))]
        assert chi2_quantile(p, dof, noncentrality) == pytest.approx(simulated, rel=0.03)
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_quantile(0.95, 0)


def test_psi_critical() -> None:
    # More observations: closer to maxPSI (from above); with very many, maxPSI itself.
    values = [psi_critical(0.2, n, 5, 0.01) for n in (100, 1000, 10000, 100000)]
    assert values == sorted(values, reverse=True)
    assert all(v > 0.2 for v in values)
    assert psi_critical(0.2, 1e9, 5, 0.01) == pytest.approx(0.2, rel=1e-3)
    # A larger tolerance allows more; so does a smaller alpha, or more bins (noise).
    assert psi_critical(0.1, 1000, 5, 0.01) < psi_critical(0.2, 1000, 5, 0.01)
    assert psi_critical(0.2, 1000, 5, 0.01) < psi_critical(0.2, 1000, 5, 0.001)
    assert psi_critical(0.2, 1000, 2, 0.01) < psi_critical(0.2, 1000, 10, 0.01)
    # The definition: the (1 - alpha) quantile of noncentral chi-square(B - 1, n maxPSI) / n.
    assert psi_critical(0.2, 1000, 5, 0.01) == pytest.approx(chi2_quantile(0.99, 4, 200) / 1000)
    # No drift tolerated: noise alone, chi-square(B - 1) / n.
    assert psi_critical(0.0, 1000, 11, 0.01) == pytest.approx(23.209 / 1000, rel=0.02)


def test_look_alpha_spends_alpha_over_every_look() -> None:
    alpha = 0.01
    shares = [look_alpha(alpha, k) for k in range(1, 200001)]
    assert shares == sorted(shares, reverse=True)
    assert shares[0] == pytest.approx(alpha * 6 / math.pi**2)
    assert sum(shares) <= alpha
    # The tail beyond K looks is about alpha * 6 / (pi^2 K).
    assert sum(shares) == pytest.approx(alpha, rel=1e-5)
    assert look_alpha(alpha, 0) == shares[0], "look 0 counts as the first"
