"""How a canary is judged: pure rules from window counts, and the evidence gathered so far, to
verdicts and the evidence after this window. No I/O.

Rules (one `Measurement` per check, plus `samples`; the statistics are in `sequential`):
- samples: fewer than `minSamples` canary requests in the window, or no data at all, is
  Inconclusive: it holds the rollout. A check that would pass is then Inconclusive too; a
  statistical check's failure still fails (its evidence is the whole rollout's, not the
  window's), a custom check's does not.
- errorRate: the ratio of the canary's error rate (non-2xx, 4xx included) to stable's, tested
  sequentially against maxRatio at the check's share of alpha over the whole rollout; Failed
  once shown above it (or the rate shown above the optional `max`). Undecided, it holds the
  step (Inconclusive) while the data lean worse than maxRatio (or over `max`), or while a
  canary at about twice maxRatio is not yet 3 times less likely than one at maxRatio; else
  Passed. The evidence (counts, the ratio's estimate and confidence sequence) is in the
  measurement and in `Evidence`.
- latencyP99: the same test on slow requests, those slower than stable's p99 bucket bound as
  measured in the first interval with enough stable requests; `maxMs` is a one-sample guard on
  the share of canary requests slower than maxMs (at most 1%). Slow requests that are shown
  under 1% of the canary's (its p99 within the bound) need not be told from twice stable's
  share: a bound set high by a load spike would leave too few of them to ever tell.
- predictionDrift: PSI of the canary's predictions against the stable revision's (class counts
  for classifiers, value histograms for regressors), both pooled over the intervals where both
  predicted; Failed when above the PSI that maxPSI and the sample sizes allow at the look's
  level, held while above maxPSI within the noise; a stable revision with fewer than
  minSamples requests in the window makes this check Inconclusive.
- dataDrift: the same test for the largest PSI over input features of the canary's live inputs,
  pooled over the rollout, against the model's reference statistics (taken as exact).
- custom: the provider's value within [min, max]; no value, or a provider that runs no custom
  checks, is Inconclusive. Custom checks count towards failureLimit.
Overall: Failed if any check failed, else Inconclusive if any was, else Passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from canarium_serving.metrics_contract import psi

from canarium.analysis import sequential
from canarium.analysis.samples import (
    Buckets,
    MeasuredWindow,
    RevisionMetrics,
    WindowResult,
    bound_key,
    combine,
    parse_bound,
)
from canarium.analysis.stats import align
from canarium.api import AnalysisChecks, AnalysisSpec, CustomCheck, Evidence, Measurement, Verdict

PASSED: Verdict = "Passed"
FAILED: Verdict = "Failed"
INCONCLUSIVE: Verdict = "Inconclusive"

CUSTOM_CHECKS_NOT_RUN = "custom checks need the prometheus provider"
"""The reason of a custom check's verdict when the provider runs no custom checks."""

SLOW_QUANTILE = 0.99
"""latencyP99: a request is slow above stable's 99th percentile; the maxMs guard allows 1%."""
MIN_STABLE_FOR_SLOW = 100
"""Stable requests an interval needs before its p99 bucket bound is taken as the slow bound."""
CLEAR_ODDS = 3.0
"""A comparison lets a step pass once the tolerance is this many times likelier than twice the
tolerance (with no events on either side there is nothing to compare, and it passes)."""


@dataclass(frozen=True)
class Judgement:
    """The verdict of one analysis interval, its measurements, a one-line summary, and the
    evidence of the statistical checks after it (the next interval's starting point)."""

    verdict: Verdict
    measurements: list[Measurement]
    summary: str
    evidence: list[Evidence] = field(default_factory=list)


def num(value: float) -> str:
    return f"{value:.4g}"


def _pct(events: float, requests: float) -> str:
    return f"{num(100.0 * events / requests)}% ({num(events)}/{num(requests)})"


def _round(value: float | None) -> float | None:
    """Six significant digits: stable status values, no noise."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class _Result:
    verdict: Verdict
    value: float | None
    reason: str
    evidence: Evidence | None = None
    statistical: bool = False
    """A failure of the evidence of the whole rollout: a small window does not undo it."""
    held: bool = False
    """Inconclusive because the evidence leans the wrong way, not for want of data."""


def _inconclusive(reason: str, value: float | None = None) -> _Result:
    return _Result(INCONCLUSIVE, value, reason)


def alpha_shares(checks: AnalysisChecks) -> int:
    """How many statistical tests share the analysis' alpha (Bonferroni): each comparison with
    stable, each absolute guard, each drift check."""
    shares = 0
    if checks.error_rate is not None:
        shares += 1 + (checks.error_rate.max is not None)
    if checks.latency_p99 is not None:
        shares += 1 + (checks.latency_p99.max_ms is not None)
    shares += checks.prediction_drift is not None
    shares += checks.data_drift is not None
    return max(shares, 1)


# --- comparisons with stable: errorRate and latencyP99 --------------------------------------


@dataclass(frozen=True)
class _Counts:
    """Requests and events (errors, or slow requests) of each revision in one window."""

    canary: tuple[float, float] | None  # None: the canary's count is unknown in this window
    stable: tuple[float, float]
    guard: tuple[float, float] | None  # requests and events over the absolute guard


def _fresh(check: str, tolerance: float) -> Evidence:
    return Evidence(
        check=check, max_ratio=tolerance, log_likelihood=sequential.empty_log_likelihood()
    )


def _carried(previous: Evidence | None, check: str, tolerance: float) -> Evidence:
    """The evidence to add to: the previous one, unless the tolerance changed (its grid is
    centred on the tolerance, so evidence starts again)."""
    if (
        previous is None
        or previous.max_ratio != tolerance
        or len(previous.log_likelihood) != sequential.GRID_SIZE
    ):
        return _fresh(check, tolerance)
    return previous.model_copy(deep=True)


def _accumulate(evidence: Evidence, counts: _Counts) -> None:
    if counts.guard is not None:
        evidence.guard_requests += counts.guard[0]
        evidence.guard_events += counts.guard[1]
    if counts.canary is None or counts.canary[0] <= 0:
        return
    n_c, x_c = counts.canary
    n_s, x_s = counts.stable
    if n_s > 0:
        tolerance = evidence.max_ratio or 1.0
        evidence.log_likelihood = [
            round(v, 4)
            for v in sequential.add_interval(
                evidence.log_likelihood, tolerance, (n_c, x_c), (n_s, x_s)
            )
        ]
        evidence.canary_requests += n_c
        evidence.canary_events += x_c
        evidence.stable_requests += n_s
        evidence.stable_events += x_s
    else:
        evidence.unpaired_requests += n_c
        evidence.unpaired_events += x_c


def _ratio(evidence: Evidence) -> float | None:
    if evidence.canary_requests <= 0 or evidence.stable_requests <= 0:
        return None
    if evidence.stable_events <= 0:
        return None if evidence.canary_events <= 0 else math.inf
    canary_rate = evidence.canary_events / evidence.canary_requests
    return canary_rate / (evidence.stable_events / evidence.stable_requests)


def _guard_log_e(evidence: Evidence, guard: tuple[float, float] | None) -> float:
    """log of the absolute guard's e-value (limit, alpha); -inf without a guard or data."""
    if guard is None or evidence.guard_requests <= 0:
        return -math.inf
    return sequential.rate_above_limit(evidence.guard_events, evidence.guard_requests, guard[0])


@dataclass(frozen=True)
class _Floor:
    """A canary event rate below which a comparison that leans neither way need not wait to
    tell the tolerance from twice it: `rate` shown at `alpha` (latencyP99: under 1% of the
    canary's requests are slower than stable's p99 bound, so its p99 is within that bound,
    which is all a histogram resolves; without it a bound that a load spike set high makes
    slow requests so rare that the step would wait for them indefinitely)."""

    rate: float
    alpha: float
    shown: str
    """What it means, for the reason."""


def _below_floor(evidence: Evidence, floor: _Floor | None) -> bool:
    if floor is None:
        return False
    requests = evidence.canary_requests + evidence.unpaired_requests
    events = evidence.canary_events + evidence.unpaired_events
    log_e = sequential.rate_below_limit(events, requests, floor.rate)
    return log_e >= math.log(1.0 / floor.alpha)


def _hold(
    evidence: Evidence,
    shown: sequential.RatioEvidence,
    tolerance: float,
    guard: tuple[float, float] | None,
    below_floor: bool = False,
) -> str:
    """Why an undecided comparison holds the step ("" when it lets it pass): the data lean
    towards worse than tolerated (or over the guard), or a clearly worse canary is not yet
    unlikely enough (unless the canary's rate is shown below its floor). Holding gathers the
    observations a sequential test needs; a step that moved on at "not shown worse" would
    promote bad canaries at low traffic."""
    if evidence.decision is not None:
        return ""
    over_guard = (
        guard is not None
        and evidence.guard_requests > 0
        and evidence.guard_events > guard[0] * evidence.guard_requests
    )
    if shown.log_lr_worse > 0 or shown.slope > 0 or over_guard:
        return (
            f"leaning worse than {num(tolerance)}x stable"
            + (" or over the guard" if over_guard else "")
            + ", not shown yet: holding for more evidence"
        )
    events = evidence.canary_events + evidence.stable_events
    unclear = events > 0 and shown.log_lr_double > -math.log(CLEAR_ODDS)
    if unclear and not below_floor:
        return (
            f"not yet {CLEAR_ODDS:g} times likelier within {num(tolerance)}x stable than at "
            "twice that: holding for more evidence"
        )
    return ""


def _compare(
    evidence: Evidence,
    tolerance: float,
    alpha: float,
    guard: tuple[float, float] | None,
    floor: _Floor | None = None,
) -> tuple[str, str, bool]:
    """Judge the evidence: its decision (set on `evidence`), the reason's two parts (what was
    seen, what it shows) and whether it leans towards worse than tolerated without showing it
    yet (a worse ratio, or a rate over the guard, is likelier than the tolerance)."""
    unpaired = None
    if evidence.unpaired_requests > 0:
        rate = sequential.poisson_upper_bound(
            evidence.stable_events, evidence.stable_requests, alpha / 2
        )
        if rate is not None:
            unpaired = (evidence.unpaired_events, evidence.unpaired_requests, rate)
    shown = sequential.ratio_evidence(evidence.log_likelihood, tolerance, alpha, unpaired)
    evidence.ratio = _round(_ratio(evidence))
    evidence.ratio_lower = _round(shown.lower)
    evidence.ratio_upper = _round(shown.upper)
    bound = math.log(2.0 / alpha)
    seen = []
    if evidence.canary_requests > 0:
        seen.append(
            f"canary {_pct(evidence.canary_events, evidence.canary_requests)}, "
            f"stable {_pct(evidence.stable_events, evidence.stable_requests)}"
        )
        low = "0" if shown.lower is None else num(shown.lower)
        high = "inf" if shown.upper is None else num(shown.upper)
        estimate = "?" if evidence.ratio is None else num(evidence.ratio)
        seen.append(f"ratio {estimate}, {num(100 * (1 - alpha))}% interval [{low}, {high}]")
    if evidence.unpaired_requests > 0:
        seen.append(
            f"without stable traffic {_pct(evidence.unpaired_events, evidence.unpaired_requests)}"
        )
    guard_log_e = _guard_log_e(evidence, guard)
    guard_shown = guard is not None and guard_log_e >= math.log(1.0 / guard[1])
    if guard_shown:
        seen.append(f"{_pct(evidence.guard_events, evidence.guard_requests)} over the guard")
    if evidence.decision != FAILED:
        if shown.log_e_harm >= bound:
            evidence.decision = "Failed"
            why = f"shown worse than {num(tolerance)}x stable"
        elif guard_shown and guard is not None:
            evidence.decision = "Failed"
            why = f"shown above the guard {num(guard[0])}"
        elif shown.log_e_within >= bound:
            evidence.decision = "Passed"
            why = f"shown within {num(tolerance)}x stable"
        else:
            evidence.decision = None
            why = f"not shown worse than {num(tolerance)}x stable"
    else:
        why = "shown worse earlier in this rollout"
    below_floor = _below_floor(evidence, floor)
    hold = _hold(evidence, shown, tolerance, guard, below_floor)
    # An undecided comparison's reason says when the floor is what lets the step pass.
    note = f"; {floor.shown}" if floor and below_floor and evidence.decision is None else ""
    why = hold or why + note
    return "; ".join(seen) or "no paired requests yet", why, bool(hold)


def _comparison(
    check: str,
    previous: Evidence | None,
    tolerance: float,
    counts: _Counts,
    alpha: float,
    guard: tuple[float, float] | None,
    threshold: str,
    evidence: Evidence | None = None,
    floor: _Floor | None = None,
) -> tuple[_Result, str]:
    evidence = evidence or _carried(previous, check, tolerance)
    _accumulate(evidence, counts)
    seen, why, leaning = _compare(evidence, tolerance, alpha, guard, floor)
    reason = f"{seen}: {why}"
    value = evidence.ratio
    if evidence.decision == FAILED:
        return _Result(FAILED, value, reason, evidence, statistical=True), threshold
    if leaning:
        # "Not shown worse" is not enough to move on while the data lean the other way: a
        # sequential test needs the observations it asks for, and holding gathers them.
        return _Result(INCONCLUSIVE, value, reason, evidence, held=True), threshold
    if counts.canary is None or counts.canary[0] <= 0:
        return _Result(INCONCLUSIVE, value, f"no canary requests ({reason})", evidence), threshold
    return _Result(PASSED, value, reason, evidence), threshold


def check_error_rate(
    canary: RevisionMetrics,
    stable: RevisionMetrics | None,
    previous: Evidence | None,
    tolerance: float,
    limit: float | None,
    alpha: float,
) -> tuple[_Result, str]:
    """errorRate: the canary's errors against stable's, with the evidence so far."""
    stable = stable or RevisionMetrics()
    counts = _Counts(
        canary=(canary.requests, canary.errors),
        stable=(stable.requests, stable.errors),
        guard=(canary.requests, canary.errors) if limit is not None else None,
    )
    threshold = f"ratio <= {num(tolerance)} vs stable" + (
        f", rate <= {num(limit)}" if limit is not None else ""
    )
    return _comparison(
        "errorRate",
        previous,
        tolerance,
        counts,
        alpha,
        None if limit is None else (limit, alpha),
        threshold,
    )


def _monotonic(buckets: Buckets) -> dict[float, float]:
    """A cumulative histogram's counts made monotonic in `le` order (as histogram_quantile
    does): `increase()` per bucket can leave a higher bucket a little below a lower one."""
    out: dict[float, float] = {}
    top = 0.0
    for le, count in sorted(buckets.items()):
        top = max(top, count)
        out[le] = top
    return out


def _above(buckets: Buckets, bound: float) -> tuple[float, float] | None:
    """(observations, observations above `bound`) of a cumulative histogram that has `bound`
    as a bucket bound; None when it has no observations or not that bound."""
    buckets = _monotonic(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0 or bound not in buckets:
        return None
    return total, max(total - buckets[bound], 0.0)


def slow_bound(buckets: Buckets) -> float | None:
    """The bucket bound at the 99th percentile of a latency histogram: the lowest finite bound
    with at least 99% of the observations at or below it (the highest one when the p99 lies
    above every finite bound). None without observations."""
    buckets = _monotonic(buckets)
    total = buckets.get(math.inf, 0.0)
    finite = sorted(le for le in buckets if math.isfinite(le))
    if total <= 0 or not finite:
        return None
    return next((le for le in finite if buckets[le] >= SLOW_QUANTILE * total), finite[-1])


def check_latency(
    canary: RevisionMetrics,
    stable: RevisionMetrics | None,
    previous: Evidence | None,
    tolerance: float,
    limit_ms: float | None,
    alpha: float,
) -> tuple[_Result, str]:
    """latencyP99: the canary's share of requests slower than stable's p99 bound against
    stable's, and the share slower than maxMs against 1%."""
    stable = stable or RevisionMetrics()
    evidence = _carried(previous, "latencyP99", tolerance)
    bound = evidence.slow_seconds
    canary_slow = stable_slow = None
    if bound is not None:
        canary_slow = _above(canary.latency_buckets, bound)
        stable_slow = _above(stable.latency_buckets, bound)
    elif stable.latency_buckets.get(math.inf, 0.0) >= MIN_STABLE_FOR_SLOW:
        # Taken from this window, it counts from the next one on: a bound chosen by stable's
        # own numbers would flatter stable in the window it was chosen from.
        evidence.slow_seconds = slow_bound(stable.latency_buckets)
    guard = None
    guard_bound = None
    if limit_ms is not None:
        limit_s = limit_ms / 1000.0
        guard_bound = min(
            (le for le in canary.latency_buckets if math.isfinite(le) and le >= limit_s),
            default=None,
        )
        if guard_bound is not None:
            guard = _above(canary.latency_buckets, guard_bound)
    counts = _Counts(canary=canary_slow, stable=stable_slow or (0.0, 0.0), guard=guard)
    threshold = f"slow ratio <= {num(tolerance)} vs stable" + (
        f", p99 <= {num(limit_ms)} ms" if limit_ms is not None else ""
    )
    result, threshold = _comparison(
        "latencyP99",
        previous,
        tolerance,
        counts,
        alpha,
        None if limit_ms is None else (1.0 - SLOW_QUANTILE, alpha),
        threshold,
        evidence,
        _Floor(
            1.0 - SLOW_QUANTILE,
            alpha,
            f"under {num(100 * (1 - SLOW_QUANTILE))}% of canary requests shown slow: its p99 "
            "is within that bound",
        ),
    )
    if result.verdict == INCONCLUSIVE and bound is None and not result.held:
        # Nothing to compare yet: the canary is not shown worse (as errorRate without errors).
        observed = canary.latency_buckets.get(math.inf, 0.0) > 0
        chosen = evidence.slow_seconds
        reason = (
            f"stable's p99 bound {num(chosen * 1000)} ms taken: slow requests are compared "
            "from the next interval on"
            if chosen is not None
            else f"no stable p99 yet (stable needs {MIN_STABLE_FOR_SLOW} requests in a window)"
        )
        if not observed:
            reason = f"no canary latency observations; {reason}"
        result = _Result(PASSED if observed else INCONCLUSIVE, None, reason, evidence)
    elif result.verdict != FAILED and bound is not None:
        result = _Result(
            result.verdict,
            result.value,
            f"slow: over {num(bound * 1000)} ms; {result.reason}",
            evidence,
        )
    return result, threshold


# --- drift ------------------------------------------------------------------------------------

# PSI over few observations is mostly noise, and biased upwards: two samples of the same
# distribution with ~10 per bin routinely exceed 0.25. A drift check judges only with at least
# this many observations per bin on each side; fewer is Inconclusive (it holds, never fails).
MIN_PER_BIN = 20


def too_few(what: str, count: float, bins: int) -> str | None:
    need = MIN_PER_BIN * max(bins, 1)
    if count < need:
        return (
            f"{num(count)} {what} < {need} for a reliable PSI over {bins} bins "
            f"({MIN_PER_BIN} per bin)"
        )
    return None


@dataclass(frozen=True)
class _Psi:
    """The PSI of one output or feature, and the effective sample size and bins it came from."""

    value: float
    name: str
    n_eff: float
    bins: int


def _effective(n_canary: float, n_stable: float | None) -> float:
    """Effective sample size of a two-sample PSI (None: the second side is exact)."""
    if n_stable is None:
        return n_canary
    return n_canary * n_stable / (n_canary + n_stable)


def _class_psi(canary: RevisionMetrics, stable: RevisionMetrics) -> list[_Psi] | str:
    """PSI of each classifier output (empty: no classifier outputs); a reason string when
    they cannot be compared."""
    outputs = sorted(
        {o for o, _ in canary.prediction_classes} | {o for o, _ in stable.prediction_classes}
    )
    found = []
    for output in outputs:
        classes = sorted(
            {c for o, c in canary.prediction_classes if o == output}
            | {c for o, c in stable.prediction_classes if o == output}
        )
        actual = [canary.prediction_classes.get((output, c), 0.0) for c in classes]
        expected = [stable.prediction_classes.get((output, c), 0.0) for c in classes]
        if sum(actual) <= 0 or sum(expected) <= 0:
            who = "canary" if sum(actual) <= 0 else "stable"
            return f"no predictions of output {output!r} from {who}"
        for who, counts in (("canary", actual), ("stable", expected)):
            short = too_few(f"{who} predictions of {output!r}", sum(counts), len(classes))
            if short:
                return short
        n_eff = _effective(sum(actual), sum(expected))
        found.append(_Psi(psi(expected, actual), output, n_eff, len(classes)))
    return found


def _value_psi(canary: RevisionMetrics, stable: RevisionMetrics) -> list[_Psi] | str:
    outputs = sorted(set(canary.prediction_value_buckets) | set(stable.prediction_value_buckets))
    found = []
    for output in outputs:
        c_hist = canary.prediction_value_buckets.get(output, {})
        s_hist = stable.prediction_value_buckets.get(output, {})
        if c_hist.get(math.inf, 0.0) <= 0 or s_hist.get(math.inf, 0.0) <= 0:
            who = "canary" if c_hist.get(math.inf, 0.0) <= 0 else "stable"
            return f"no predictions of output {output!r} from {who}"
        aligned = align(s_hist, c_hist)
        if aligned is None:
            return f"the versions' histograms of output {output!r} do not overlap"
        bins = len(aligned[0])
        for who, hist in (("canary", c_hist), ("stable", s_hist)):
            short = too_few(f"{who} predictions of {output!r}", hist[math.inf], bins)
            if short:
                return short
        n_eff = _effective(c_hist[math.inf], s_hist[math.inf])
        found.append(_Psi(psi(*aligned), output, n_eff, bins))
    return found


def _drift_verdict(
    evidence: Evidence,
    found: list[_Psi],
    limit: float,
    alpha: float,
    what: str,
) -> _Result:
    """Test each PSI at this look's level (shared by the outputs or features tested); Failed
    when one is above what maxPSI and its sample size allow."""
    evidence.looks += 1
    level = sequential.look_alpha(alpha, evidence.looks) / len(found)
    worst: tuple[float, _Psi, float] | None = None  # (excess, psi, allowed)
    for item in found:
        allowed = sequential.psi_critical(limit, item.n_eff, item.bins, level)
        excess = item.value - allowed
        if worst is None or excess > worst[0]:
            worst = (excess, item, allowed)
    assert worst is not None  # callers pass at least one
    excess, item, allowed = worst
    text = (
        f"{what} {item.name!r} PSI {num(item.value)}, at most {num(allowed)} allowed for "
        f"maxPSI {num(limit)} with {num(item.n_eff)} observations (look {evidence.looks})"
    )
    if excess > 0 or evidence.decision == FAILED:
        evidence.decision = "Failed"
        return _Result(FAILED, item.value, text, evidence, statistical=True)
    if any(i.value > limit for i in found):
        # Above maxPSI but within the noise of this sample: hold for more data, as a
        # comparison leaning worse does, rather than pass.
        return _Result(INCONCLUSIVE, item.value, f"{text}: holding for more evidence", evidence)
    return _Result(PASSED, item.value, text, evidence)


def pooled_counts(metrics: RevisionMetrics) -> dict[str, dict[str, float]]:
    """The drift-relevant counts of a revision as Evidence keeps them."""
    out: dict[str, dict[str, float]] = {}
    for (output, cls), count in metrics.prediction_classes.items():
        out.setdefault(f"class/{output}", {})[cls] = count
    for output, buckets in metrics.prediction_value_buckets.items():
        out[f"value/{output}"] = {bound_key(le): c for le, c in buckets.items()}
    for feature, buckets in metrics.input_feature_buckets.items():
        out[f"input/{feature}"] = {bound_key(le): c for le, c in buckets.items()}
    return out


def pooled_metrics(counts: Mapping[str, Mapping[str, float]]) -> RevisionMetrics:
    """Evidence's pooled counts as metrics (the inverse of `pooled_counts`)."""
    classes: dict[tuple[str, str], float] = {}
    values: dict[str, Buckets] = {}
    inputs: dict[str, Buckets] = {}
    for key, entries in counts.items():
        kind, _, name = key.partition("/")
        if kind == "class":
            classes.update({(name, c): v for c, v in entries.items()})
        else:
            target = values if kind == "value" else inputs
            target[name] = {parse_bound(le): v for le, v in entries.items()}
    return RevisionMetrics(
        requests=sum(classes.values()),
        prediction_classes=classes,
        prediction_value_buckets=values,
        input_feature_buckets=inputs,
    )


def _pool(
    pooled: Mapping[str, Mapping[str, float]], window: RevisionMetrics
) -> dict[str, dict[str, float]]:
    """The pooled counts with one more window added."""
    total = combine([pooled_metrics(pooled), window])
    return pooled_counts(total)


def _drift_evidence(check: str, previous: Evidence | None) -> Evidence:
    return previous.model_copy(deep=True) if previous is not None else Evidence(check=check)


def check_prediction_drift(
    canary: RevisionMetrics,
    stable: RevisionMetrics | None,
    limit: float,
    min_samples: int,
    alpha: float = 0.01,
    previous: Evidence | None = None,
) -> _Result:
    """predictionDrift on the canary's and stable's predictions pooled over the intervals
    where both took requests."""
    if stable is None:
        return _inconclusive("no stable metrics to compare with")
    if stable.requests < min_samples:
        return _inconclusive(
            f"stable has {num(stable.requests)} requests < minSamples {min_samples}"
        )
    evidence = _drift_evidence("predictionDrift", previous)
    for who, side in (("canary", canary), ("stable", stable)):
        if not _predicted(side):
            return _Result(INCONCLUSIVE, None, f"no {who} predictions in this window", evidence)
    evidence.pooled_canary = _pool(evidence.pooled_canary, _predictions(canary))
    evidence.pooled_stable = _pool(evidence.pooled_stable, _predictions(stable))
    pooled_canary = pooled_metrics(evidence.pooled_canary)
    pooled_stable = pooled_metrics(evidence.pooled_stable)
    found: list[_Psi] = []
    for result in (
        _class_psi(pooled_canary, pooled_stable),
        _value_psi(pooled_canary, pooled_stable),
    ):
        if isinstance(result, str):
            return _Result(INCONCLUSIVE, None, result, evidence)
        found += result
    if not found:
        return _Result(
            INCONCLUSIVE,
            None,
            "no prediction metrics (no classifier or regressor outputs)",
            evidence,
        )
    return _drift_verdict(evidence, found, limit, alpha, "vs stable, output")


def _predicted(metrics: RevisionMetrics) -> bool:
    """Whether a revision predicted anything in the window (counters may exist at zero)."""
    return sum(metrics.prediction_classes.values()) > 0 or any(
        b.get(math.inf, 0.0) > 0 for b in metrics.prediction_value_buckets.values()
    )


def _predictions(metrics: RevisionMetrics) -> RevisionMetrics:
    return RevisionMetrics(
        prediction_classes=metrics.prediction_classes,
        prediction_value_buckets=metrics.prediction_value_buckets,
    )


def check_data_drift(
    canary: RevisionMetrics,
    limit: float,
    alpha: float = 0.01,
    previous: Evidence | None = None,
) -> _Result:
    """dataDrift on the canary's live inputs pooled over the rollout, against the model's
    reference statistics."""
    if not canary.reference_input_ratios:
        return _inconclusive("the model has no reference input statistics")
    evidence = _drift_evidence("dataDrift", previous)
    if not any(b.get(math.inf, 0.0) > 0 for b in canary.input_feature_buckets.values()):
        return _Result(INCONCLUSIVE, None, "no live input observations", evidence)
    evidence.pooled_canary = _pool(
        evidence.pooled_canary, RevisionMetrics(input_feature_buckets=canary.input_feature_buckets)
    )
    inputs = pooled_metrics(evidence.pooled_canary).input_feature_buckets
    found: list[_Psi] = []
    too_few_reason: str | None = None
    for feature in sorted(canary.reference_input_ratios):
        live = inputs.get(feature, {})
        if live.get(math.inf, 0.0) <= 0:
            continue
        aligned = align(canary.reference_input_ratios[feature], live)
        if aligned is None:
            return _Result(
                INCONCLUSIVE,
                None,
                f"feature {feature!r}: live and reference buckets differ",
                evidence,
            )
        short = too_few(f"live values of {feature!r}", live[math.inf], len(aligned[0]))
        if short:
            too_few_reason = short
            continue
        found.append(_Psi(psi(*aligned), feature, live[math.inf], len(aligned[0])))
    if not found:
        return _Result(INCONCLUSIVE, None, too_few_reason or "no live input observations", evidence)
    return _drift_verdict(evidence, found, limit, alpha, "vs reference, feature")


def _custom_threshold(check: CustomCheck) -> str:
    parts = []
    if check.min is not None:
        parts.append(f">= {num(check.min)}")
    if check.max is not None:
        parts.append(f"<= {num(check.max)}")
    return " and ".join(parts)


def check_custom(check: CustomCheck, value: float | None, no_value_reason: str) -> _Result:
    if value is None or math.isnan(value):
        return _inconclusive(no_value_reason)
    if check.min is not None and value < check.min:
        return _Result(FAILED, value, f"{num(value)} < min {num(check.min)}")
    if check.max is not None and value > check.max:
        return _Result(FAILED, value, f"{num(value)} > max {num(check.max)}")
    return _Result(PASSED, value, f"{num(value)} within {_custom_threshold(check)}")


# --- the judgement ---------------------------------------------------------------------------


def measurement(check: str, threshold: str, result: _Result, now: datetime) -> Measurement:
    """A check's result as status shows it."""
    return Measurement(
        check=check,
        value=_round(result.value),
        threshold=threshold,
        verdict=result.verdict,
        reason=result.reason[:1024],
        time=now,
    )


def check_samples(
    canary: RevisionMetrics | None, min_samples: int, no_data: str
) -> tuple[str, _Result]:
    """The samples check, and why a window with too little data holds ("" when it does
    not)."""
    if canary is None or canary.empty:
        return no_data, _inconclusive(no_data)
    if canary.requests < min_samples:
        hold = f"{num(canary.requests)} requests < minSamples {min_samples}"
        return hold, _inconclusive(hold, canary.requests)
    return "", _Result(PASSED, canary.requests, f"{num(canary.requests)} requests >= {min_samples}")


def _statistical(
    checks: AnalysisChecks,
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    previous: Mapping[str, Evidence],
    alpha: float,
    min_samples: int,
) -> list[tuple[str, str, _Result]]:
    """The statistical checks' results: (check, threshold, result)."""
    results = []
    window = canary or RevisionMetrics()
    paired = None if canary is None or canary.empty else stable
    if checks.error_rate is not None:
        spec = checks.error_rate
        result, threshold = check_error_rate(
            window, paired, previous.get("errorRate"), spec.max_ratio, spec.max, alpha
        )
        results.append(("errorRate", threshold, result))
    if checks.latency_p99 is not None:
        latency = checks.latency_p99
        result, threshold = check_latency(
            window, paired, previous.get("latencyP99"), latency.max_ratio, latency.max_ms, alpha
        )
        results.append(("latencyP99", threshold, result))
    if checks.prediction_drift is not None:
        limit = checks.prediction_drift.max_psi
        result = check_prediction_drift(
            window, stable, limit, min_samples, alpha, previous.get("predictionDrift")
        )
        results.append(("predictionDrift", f"PSI <= {num(limit)}", result))
    if checks.data_drift is not None:
        limit = checks.data_drift.max_psi
        result = check_data_drift(window, limit, alpha, previous.get("dataDrift"))
        results.append(("dataDrift", f"PSI <= {num(limit)}", result))
    return results


def judge(
    analysis: AnalysisSpec,
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    now: datetime,
    custom_values: Mapping[str, float | None] | None = None,
    no_data: str = "no canary metrics in this window",
    evidence: Sequence[Evidence] = (),
) -> Judgement:
    """Judge one analysis window of the canary against `analysis`' checks, adding it to the
    `evidence` the statistical checks gathered in the earlier windows of this rollout.

    `canary`/`stable` are window counts (`WindowResult`); None means no data. `custom_values`
    are the custom checks' values by name from a provider that runs them (missing or None = no
    data); None when the provider runs no custom checks. `no_data` says why there are no
    canary numbers when there are none.
    """
    checks = analysis.checks
    measurements: list[Measurement] = []
    gathered: list[Evidence] = []
    previous = {e.check: e for e in evidence}
    alpha = analysis.alpha / alpha_shares(checks)

    def add(check: str, threshold: str, result: _Result) -> None:
        measurements.append(measurement(check, threshold, result, now))

    min_samples = analysis.min_samples
    hold, samples = check_samples(canary, min_samples, no_data)
    add("samples", f">= {min_samples}", samples)

    def run(check: str, threshold: str, result: _Result) -> None:
        if result.evidence is not None:
            gathered.append(result.evidence)
        elif check in previous:
            gathered.append(previous[check])  # nothing new: the evidence stays as it was
        if hold and result.verdict != INCONCLUSIVE and not result.statistical:
            result = _inconclusive(f"{hold} ({result.reason})", result.value)
        add(check, threshold, result)

    for check, threshold, result in _statistical(
        checks, canary, stable, previous, alpha, min_samples
    ):
        run(check, threshold, result)
    no_value = (
        CUSTOM_CHECKS_NOT_RUN if custom_values is None else "no data (the query returned nothing)"
    )
    for custom in checks.custom:
        run(
            custom.name,
            _custom_threshold(custom),
            check_custom(custom, (custom_values or {}).get(custom.name), no_value),
        )

    verdicts = {m.verdict for m in measurements}
    verdict = FAILED if FAILED in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PASSED
    return Judgement(verdict, measurements, _summary(verdict, measurements), gathered)


def _summary(verdict: Verdict, measurements: list[Measurement]) -> str:
    if verdict == PASSED:
        return f"Passed: {len(measurements) - 1} checks passed ({measurements[0].reason})"
    picked = [m for m in measurements if m.verdict == verdict]
    if verdict == INCONCLUSIVE and measurements[0].verdict == INCONCLUSIVE:
        picked = picked[:1]
    text = "; ".join(f"{m.check}: {m.reason}" for m in picked)
    return f"{verdict}: {text}"[:1024]


def unanswered(now: datetime, seconds: float) -> MeasuredWindow:
    """A window whose numbers did not come in time: no data, so every check is inconclusive
    (it holds the rollout and never fails it); the evidence stays as it was."""
    return MeasuredWindow(
        now,
        WindowResult(None, None),
        {},
        no_data=f"the metrics provider gave no answer within {seconds:g}s",
    )
