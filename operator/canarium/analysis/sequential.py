"""Sequential, always-valid tests for the analysis: evidence that accumulates over a whole rollout
and its bake, with the chance of rolling back a good canary bounded by a stated alpha however
often it is looked at. Pure functions on plain numbers (the standard library only).

Rates (errorRate, and latency as the share of slow requests) are compared by their ratio
r = canary rate / stable rate, against the user's tolerance r0 ("the canary may be up to r0
times as bad as stable"):

- **Concurrent intervals** (both revisions took requests): given an interval's events (errors)
  x = x_c + x_s, the canary's share is Binomial(x, pi(r)) with
  pi(r) = n_c r / (n_c r + n_s) when each revision's events are Poisson given its requests.
  Conditioning on every interval's totals (stratification) compares the revisions within each
  interval, so a baseline that changes over the day, or weights that change between steps,
  never bias the comparison (no Simpson's paradox). For binomial (not Poisson) errors at r = 1
  the true conditional law is hypergeometric, which is smaller in the convex order than this
  binomial (Hoeffding 1963, Theorem 4): the test is conservative there.
- **Test martingale**: the likelihood of log r is an exponential family, so for every
  alternative r1 > r0 the likelihood ratio L(r1)/L(r0) is a non-negative supermartingale under
  any r <= r0. A mixture over a grid of alternatives is one as well (the mixture SPRT of Robbins
  1970, as used for always-valid A/B tests by Johari, Koomen, Pekelis & Walsh, "Always valid
  inference", Operations Research 2022), and by Ville's inequality it ever exceeds 1/alpha with
  probability at most alpha. Crossing rolls back at once; below it evidence keeps accumulating.
  The same mixture against r < r0 proves that the canary is within tolerance (early promotion),
  and inverting the tests on the grid gives a confidence sequence for r (Howard, Ramdas,
  McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann.
  Statist. 2021): an interval valid at every look at once.
- **Intervals without stable traffic** (weight 100, the bake): the canary's events are compared,
  as a Poisson rate, with stable's rate during the rollout taken at its upper confidence bound
  (a Chernoff bound at alpha/2; the other alpha/2 is the test's), so that a stable revision that
  was lucky during the rollout cannot make a good canary look bad afterwards.
- **Absolute guards** (errorRate.max, latencyP99.maxMs): a one-sample Poisson mixture SPRT of
  the canary's rate against the limit; Poisson likelihood ratios are supermartingales under
  binomial data too (1 + z <= e^z), so it is valid for either.

Drift (PSI) is tested per window: n_eff * PSI is about noncentral chi-square with B - 1 degrees
of freedom and noncentrality n_eff * maxPSI at the tolerated drift (Patnaik's and Wilson &
Hilferty's approximations for its quantile), with the k-th look at level
alpha * 6 / (pi^2 k^2), so that all looks together stay within alpha (a union bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

GRID_STEP = math.log(1.25)
"""Spacing of the grid of log-ratios the mixtures are taken over: ratios 25% apart."""
GRID_HALF = 20
"""Grid points on each side of the tolerance: ratios from r0 / 87 to r0 * 87."""
GRID_SIZE = 2 * GRID_HALF + 1
DOUBLE_STEPS = 3
"""Grid steps from the tolerance to "clearly worse": 1.25^3, about twice the tolerance."""


def grid_ratios(tolerance: float) -> list[float]:
    """The ratios of the grid, centred on the tolerance (index GRID_HALF)."""
    return [tolerance * math.exp(GRID_STEP * (j - GRID_HALF)) for j in range(GRID_SIZE)]


def empty_log_likelihood() -> list[float]:
    """The state of a test before any evidence: every ratio equally likely."""
    return [0.0] * GRID_SIZE


def add_interval(
    log_likelihood: Sequence[float],
    tolerance: float,
    canary: tuple[float, float],
    stable: tuple[float, float],
) -> list[float]:
    """The log-likelihood over the grid after one concurrent interval.

    `canary` and `stable` are (requests, events) within the interval. An interval where either
    revision took no request, or no event happened, carries no information about the ratio."""
    (n_c, x_c), (n_s, x_s) = canary, stable
    out = list(log_likelihood)
    if n_c <= 0 or n_s <= 0 or x_c + x_s <= 0:
        return out
    for j, ratio in enumerate(grid_ratios(tolerance)):
        weight = n_c * ratio
        share = weight / (weight + n_s)
        out[j] += x_c * math.log(share) + x_s * math.log1p(-share)
    top = max(out)
    return [value - top for value in out]  # only differences matter; keeps numbers small


def poisson_upper_bound(events: float, exposure: float, delta: float) -> float | None:
    """An upper (1 - delta) confidence bound for a Poisson rate from `events` in `exposure`
    requests (Chernoff: the largest mean m with m - x + x log(x / m) <= log(1 / delta)).
    None without exposure."""
    if exposure <= 0:
        return None
    budget = math.log(1.0 / delta)
    x = max(events, 0.0)

    def excess(mean: float) -> float:
        return mean - x + (x * math.log(x / mean) if x > 0 else 0.0) - budget

    low, high = max(x, 1e-12), max(x, 1.0) + budget + 2.0 * math.sqrt(max(x, 1.0) * budget) + 1
    while excess(high) < 0:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if excess(mid) < 0:
            low = mid
        else:
            high = mid
    return high / exposure


def _reference_log_lr(
    ratio: float, tolerance: float, events: float, requests: float, reference_rate: float
) -> float:
    """log of the one-sample Poisson likelihood ratio of `ratio` against `tolerance`, for
    `events` in `requests` canary requests compared with a rate `reference_rate` of stable."""
    return events * math.log(ratio / tolerance) - requests * reference_rate * (ratio - tolerance)


def _mixture(terms: Sequence[float]) -> float:
    """log of the mean of exp(terms) over GRID_HALF alternatives (missing ones count as 0)."""
    if not terms:
        return -math.inf
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / GRID_HALF)


@dataclass(frozen=True)
class RatioEvidence:
    """What a comparison of two rates says so far."""

    log_e_harm: float
    """log of the e-value against "the canary is within tolerance" (crossing: worse)."""
    log_lr_worse: float
    """log of the largest likelihood ratio of a worse ratio against the tolerance: above 0,
    the data favour the canary being worse than tolerated (not yet shown)."""
    slope: float
    """The log-likelihood's slope at the tolerance (per grid step, central difference): above
    0, the most likely ratio lies above the tolerance, even between it and the next grid
    point."""
    log_lr_double: float
    """log of the likelihood ratio of about twice the tolerance (1.25^3 = 1.95 times) against
    the tolerance, paired intervals only: well below 0, a clearly worse canary is unlikely."""
    log_e_within: float
    """log of the e-value against "the canary is worse than tolerated" (crossing: within)."""
    lower: float | None
    """Lowest ratio not rejected (None: below the grid)."""
    upper: float | None
    """Highest ratio not rejected (None: above the grid)."""


def ratio_evidence(
    log_likelihood: Sequence[float],
    tolerance: float,
    alpha: float,
    reference: tuple[float, float, float] | None = None,
) -> RatioEvidence:
    """The two one-sided mixture tests at the tolerance, and the confidence sequence for the
    ratio at level `alpha` (each side at alpha / 2).

    `reference` is (canary events, canary requests, stable's reference rate) from intervals
    without stable traffic; it counts towards harm only (an upper bound of stable's rate can
    show that the canary is worse, never that it is not)."""
    ratios = grid_ratios(tolerance)
    ref = [0.0] * GRID_SIZE
    if reference is not None and reference[2] > 0:
        events, requests, rate = reference
        ref = [_reference_log_lr(r, tolerance, events, requests, rate) for r in ratios]
    ll = list(log_likelihood)
    worse = [ll[j] + ref[j] - ll[GRID_HALF] for j in range(GRID_HALF + 1, GRID_SIZE)]
    harm = _mixture(worse)
    within = _mixture([ll[j] - ll[GRID_HALF] for j in range(GRID_HALF)])
    bound = math.log(2.0 / alpha)
    kept = []
    for k in range(GRID_SIZE):
        above = _mixture([ll[j] - ll[k] for j in range(k + 1, min(k + GRID_HALF + 1, GRID_SIZE))])
        below = _mixture([ll[j] - ll[k] for j in range(max(k - GRID_HALF, 0), k)])
        if above < bound and below < bound:
            kept.append(k)
    # A ratio between two grid points is covered only by the interval out to the next point
    # rejected on either side (the tests hold at the grid points, not between them).
    lower = ratios[kept[0] - 1] if kept and kept[0] > 0 else None
    upper = ratios[kept[-1] + 1] if kept and kept[-1] < GRID_SIZE - 1 else None
    double = ll[GRID_HALF + DOUBLE_STEPS] - ll[GRID_HALF]
    slope = (ll[GRID_HALF + 1] + ref[GRID_HALF + 1] - ll[GRID_HALF - 1] - ref[GRID_HALF - 1]) / 2
    return RatioEvidence(harm, max(worse), slope, double, within, lower, upper)


def rate_above_limit(events: float, requests: float, limit: float) -> float:
    """log of the e-value of a one-sample Poisson mixture SPRT against "the rate is at most
    `limit`", from `events` in `requests` (the alternatives: limit * 1.25^j, j = 1..GRID_HALF).
    A limit of 1 (every request may fail) can never be exceeded."""
    if requests <= 0 or limit >= 1.0:
        return -math.inf
    if limit <= 0:
        return math.inf if events > 0 else -math.inf
    terms = []
    for j in range(1, GRID_HALF + 1):
        theta = GRID_STEP * j
        terms.append(events * theta - requests * limit * math.expm1(theta))
    return _mixture(terms)


def rate_below_limit(events: float, requests: float, limit: float) -> float:
    """log of the e-value of a one-sample Poisson mixture SPRT against "the rate is at least
    `limit`", from `events` in `requests` (the alternatives: limit / 1.25^j, j = 1..GRID_HALF).
    Under a rate of at least `limit` each term's expectation is at most 1, for Poisson and for
    binomial counts alike (1 - p (1 - e^-t) <= e^(-p (1 - e^-t)))."""
    if requests <= 0 or limit <= 0:
        return -math.inf
    terms = []
    for j in range(1, GRID_HALF + 1):
        theta = GRID_STEP * j
        terms.append(-events * theta - requests * limit * math.expm1(-theta))
    return _mixture(terms)


# --- drift ------------------------------------------------------------------------------------


def look_alpha(alpha: float, look: int) -> float:
    """The level of the `look`-th test (1-based) when all looks share `alpha`:
    alpha * 6 / (pi^2 look^2), which sums to alpha over every look."""
    return alpha * 6.0 / (math.pi**2 * max(look, 1) ** 2)


def chi2_quantile(p: float, dof: float, noncentrality: float = 0.0) -> float:
    """The p-quantile of a (noncentral) chi-square distribution: Patnaik's two-moment
    approximation by a scaled central chi-square, whose quantile is Wilson & Hilferty's."""
    if dof <= 0:
        raise ValueError("degrees of freedom must be positive")
    scale = (dof + 2 * noncentrality) / (dof + noncentrality)
    f = (dof + noncentrality) ** 2 / (dof + 2 * noncentrality)
    z = NormalDist().inv_cdf(p)
    term = 1.0 - 2.0 / (9.0 * f) + z * math.sqrt(2.0 / (9.0 * f))
    return scale * f * max(term, 0.0) ** 3


def psi_critical(limit: float, n_eff: float, bins: int, alpha: float) -> float:
    """The largest PSI a sample of effective size `n_eff` over `bins` bins may show when the
    true PSI is `limit`, at level `alpha`: above it, drift beyond the limit is shown."""
    dof = max(bins - 1, 1)
    return chi2_quantile(1.0 - alpha, dof, n_eff * limit) / n_eff
