"""How a canary is judged: pure rules from window counts to verdicts, no I/O.

Rules (one `Measurement` per check, plus `samples`):
- Fewer than `minSamples` canary requests in the window, or no data at all: Inconclusive, never
  Failed, whatever the numbers say (the values are still reported).
- errorRate: non-2xx answers (4xx included) / requests <= max.
- latencyP99: p99 of the latency histogram (Prometheus' histogram_quantile), in ms, <= maxMs.
- predictionDrift: PSI of the canary's predictions against the stable revision's in the same
  window (class counts for classifiers, value histograms for regressors) <= maxPSI; a stable
  revision with fewer than minSamples requests makes this check Inconclusive.
- dataDrift: the largest PSI over input features of the canary's live inputs against the
  model's reference statistics <= maxPSI.
- custom: the provider's value within [min, max]; no value, or a provider that runs no custom
  checks, is Inconclusive.
Overall: Failed if any check failed, else Inconclusive if any was, else Passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from canarium_serving.metrics_contract import psi

from canarium.analysis.samples import RevisionMetrics
from canarium.analysis.stats import align, histogram_quantile
from canarium.api import AnalysisSpec, CustomCheck, Measurement, Verdict

PASSED: Verdict = "Passed"
FAILED: Verdict = "Failed"
INCONCLUSIVE: Verdict = "Inconclusive"

CUSTOM_CHECKS_NOT_RUN = "custom checks need the prometheus provider"
"""The reason of a custom check's verdict when the provider runs no custom checks."""


@dataclass(frozen=True)
class Judgement:
    """The verdict of one analysis interval, its measurements and a one-line summary."""

    verdict: Verdict
    measurements: list[Measurement]
    summary: str


def _num(value: float) -> str:
    return f"{value:.4g}"


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


def _at_most(value: float, limit: float, what: str) -> _Result:
    if value <= limit:
        return _Result(PASSED, value, f"{what} {_num(value)} <= {_num(limit)}")
    return _Result(FAILED, value, f"{what} {_num(value)} > {_num(limit)}")


def _inconclusive(reason: str, value: float | None = None) -> _Result:
    return _Result(INCONCLUSIVE, value, reason)


# --- the checks ------------------------------------------------------------------------------


def check_error_rate(canary: RevisionMetrics, limit: float) -> _Result:
    if canary.requests <= 0:
        return _inconclusive("no canary requests")
    rate = canary.errors / canary.requests
    return _at_most(
        rate, limit, f"{_num(canary.errors)} non-2xx of {_num(canary.requests)} requests:"
    )


def check_latency(canary: RevisionMetrics, limit_ms: float) -> _Result:
    buckets = canary.latency_buckets
    p99 = histogram_quantile(0.99, buckets)
    if p99 is None:
        return _inconclusive("no latency observations")
    # A p99 exists: so do a +Inf bucket and a finite one. As histogram_quantile counts (made
    # monotonic), the finite buckets hold the most any of them counts, +Inf at least as many.
    finite = [le for le in buckets if math.isfinite(le)]
    in_finite = max(buckets[le] for le in finite)
    if in_finite < 0.99 * max(in_finite, buckets[math.inf]):
        # The p99 lies above the highest bucket: only a lower bound is known.
        top_ms = max(finite) * 1000.0
        if top_ms >= limit_ms:
            return _Result(FAILED, top_ms, f"p99 > {_num(top_ms)} ms (the highest bucket)")
        return _inconclusive(
            f"p99 above the highest bucket ({_num(top_ms)} ms), cannot compare with "
            f"{_num(limit_ms)} ms",
            top_ms,
        )
    return _at_most(p99 * 1000.0, limit_ms, "p99 ms")


# PSI over few observations is mostly noise, and biased upwards: two samples of the same
# distribution with ~10 per bin routinely exceed 0.25. A drift check judges only with at least
# this many observations per bin on each side; fewer is Inconclusive (it holds, never fails).
MIN_PER_BIN = 20


def _too_few(what: str, count: float, bins: int) -> str | None:
    need = MIN_PER_BIN * max(bins, 1)
    if count < need:
        return (
            f"{_num(count)} {what} < {need} for a reliable PSI over {bins} bins "
            f"({MIN_PER_BIN} per bin)"
        )
    return None


def _class_psi(canary: RevisionMetrics, stable: RevisionMetrics) -> tuple[float, str] | str | None:
    """Largest PSI over classifier outputs: (psi, output); None if there are no classifier
    outputs; a reason string when they cannot be compared."""
    outputs = sorted(
        {o for o, _ in canary.prediction_classes} | {o for o, _ in stable.prediction_classes}
    )
    if not outputs:
        return None
    worst: tuple[float, str] | None = None
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
            too_few = _too_few(f"{who} predictions of {output!r}", sum(counts), len(classes))
            if too_few:
                return too_few
        value = psi(expected, actual)
        if worst is None or value > worst[0]:
            worst = (value, output)
    return worst


def _value_psi(canary: RevisionMetrics, stable: RevisionMetrics) -> tuple[float, str] | str | None:
    outputs = sorted(set(canary.prediction_value_buckets) | set(stable.prediction_value_buckets))
    if not outputs:
        return None
    worst: tuple[float, str] | None = None
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
            too_few = _too_few(f"{who} predictions of {output!r}", hist[math.inf], bins)
            if too_few:
                return too_few
        value = psi(*aligned)
        if worst is None or value > worst[0]:
            worst = (value, output)
    return worst


def check_prediction_drift(
    canary: RevisionMetrics, stable: RevisionMetrics | None, limit: float, min_samples: int
) -> _Result:
    if stable is None:
        return _inconclusive("no stable metrics to compare with")
    if stable.requests < min_samples:
        return _inconclusive(
            f"stable has {_num(stable.requests)} requests < minSamples {min_samples}"
        )
    worst: tuple[float, str] | None = None
    for result in (_class_psi(canary, stable), _value_psi(canary, stable)):
        if isinstance(result, str):
            return _inconclusive(result)
        if result is not None and (worst is None or result[0] > worst[0]):
            worst = result
    if worst is None:
        return _inconclusive("no prediction metrics (no classifier or regressor outputs)")
    value, output = worst
    return _at_most(value, limit, f"PSI of output {output!r} vs stable")


def check_data_drift(canary: RevisionMetrics, limit: float) -> _Result:
    if not canary.reference_input_ratios:
        return _inconclusive("the model has no reference input statistics")
    worst: tuple[float, str] | None = None
    too_few: str | None = None
    for feature in sorted(canary.reference_input_ratios):
        live = canary.input_feature_buckets.get(feature, {})
        if live.get(math.inf, 0.0) <= 0:
            continue
        aligned = align(canary.reference_input_ratios[feature], live)
        if aligned is None:
            return _inconclusive(f"feature {feature!r}: live and reference buckets differ")
        too_few = _too_few(f"live values of {feature!r}", live[math.inf], len(aligned[0]))
        if too_few:
            continue
        value = psi(*aligned)
        if worst is None or value > worst[0]:
            worst = (value, feature)
    if worst is None:
        return _inconclusive(too_few or "no live input observations")
    value, feature = worst
    return _at_most(value, limit, f"largest PSI, feature {feature!r}, vs reference")


def _custom_threshold(check: CustomCheck) -> str:
    parts = []
    if check.min is not None:
        parts.append(f">= {_num(check.min)}")
    if check.max is not None:
        parts.append(f"<= {_num(check.max)}")
    return " and ".join(parts)


def check_custom(check: CustomCheck, value: float | None, no_value_reason: str) -> _Result:
    if value is None or math.isnan(value):
        return _inconclusive(no_value_reason)
    if check.min is not None and value < check.min:
        return _Result(FAILED, value, f"{_num(value)} < min {_num(check.min)}")
    if check.max is not None and value > check.max:
        return _Result(FAILED, value, f"{_num(value)} > max {_num(check.max)}")
    return _Result(PASSED, value, f"{_num(value)} within {_custom_threshold(check)}")


# --- the judgement ---------------------------------------------------------------------------


def judge(
    analysis: AnalysisSpec,
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    now: datetime,
    custom_values: Mapping[str, float | None] | None = None,
    no_data: str = "no canary metrics in this window",
) -> Judgement:
    """Judge one analysis window of the canary against `analysis`' checks.

    `canary`/`stable` are window counts (`WindowResult`); None means no data. `custom_values`
    are the custom checks' values by name from a provider that runs them (missing or None = no
    data); None when the provider runs no custom checks. `no_data` says why there are no
    canary numbers when there are none.
    """
    checks = analysis.checks
    measurements: list[Measurement] = []

    def add(check: str, threshold: str, result: _Result) -> None:
        measurements.append(
            Measurement(
                check=check,
                value=_round(result.value),
                threshold=threshold,
                verdict=result.verdict,
                reason=result.reason[:1024],
                time=now,
            )
        )

    min_samples = analysis.min_samples
    if canary is None or canary.empty:
        hold = no_data
        samples = _inconclusive(hold)
    elif canary.requests < min_samples:
        hold = f"{_num(canary.requests)} requests < minSamples {min_samples}"
        samples = _inconclusive(hold, canary.requests)
    else:
        hold = ""
        samples = _Result(
            PASSED, canary.requests, f"{_num(canary.requests)} requests >= {min_samples}"
        )
    add("samples", f">= {min_samples}", samples)

    def run(check: str, threshold: str, result: _Result) -> None:
        if hold and result.verdict != INCONCLUSIVE:
            result = _inconclusive(f"{hold} ({result.reason})", result.value)
        add(check, threshold, result)

    data = canary or RevisionMetrics()
    if checks.error_rate is not None:
        limit = checks.error_rate.max
        run("errorRate", f"<= {_num(limit)}", check_error_rate(data, limit))
    if checks.latency_p99 is not None:
        limit = checks.latency_p99.max_ms
        run("latencyP99", f"<= {_num(limit)} ms", check_latency(data, limit))
    if checks.prediction_drift is not None:
        limit = checks.prediction_drift.max_psi
        run(
            "predictionDrift",
            f"<= {_num(limit)}",
            check_prediction_drift(data, stable, limit, min_samples),
        )
    if checks.data_drift is not None:
        limit = checks.data_drift.max_psi
        run("dataDrift", f"<= {_num(limit)}", check_data_drift(data, limit))
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
    return Judgement(verdict, measurements, _summary(verdict, measurements))


def _summary(verdict: Verdict, measurements: list[Measurement]) -> str:
    if verdict == PASSED:
        return f"Passed: {len(measurements) - 1} checks passed ({measurements[0].reason})"
    picked = [m for m in measurements if m.verdict == verdict]
    if verdict == INCONCLUSIVE and measurements[0].verdict == INCONCLUSIVE:
        picked = picked[:1]
    text = "; ".join(f"{m.check}: {m.reason}" for m in picked)
    return f"{verdict}: {text}"[:1024]


def unanswered(analysis: AnalysisSpec, now: datetime, seconds: float) -> Judgement:
    """A window whose numbers did not come in time: no data, so every check is inconclusive
    (it holds the rollout and never fails it)."""
    return judge(
        analysis,
        None,
        None,
        now,
        {},
        no_data=f"the metrics provider gave no answer within {seconds:g}s",
    )
