"""The judge Canarium had before the sequential one: fixed per-interval thresholds, the Argo
Rollouts / Flagger way. It exists only as the baseline of `make bench-judgement`
(tests/bench/bench_judgement.py); the operator never uses it.

Rules (a copy of the old `canarium.analysis.judge`, with the new judge's signature): every
interval is judged on its own counts, nothing carries over (no evidence in or out), and the
state machine rolls back after `failureLimit` failed intervals.
- samples: fewer than `minSamples` canary requests, or no data: Inconclusive (it holds).
- errorRate: the canary's non-2xx / requests in the window <= `errorRate.max` (0.01 if unset).
- latencyP99: the window's p99 (Prometheus' histogram_quantile) <= `latencyP99.maxMs` (200 if
  unset).
- predictionDrift / dataDrift: PSI <= `maxPSI`, judged only with at least MIN_PER_BIN
  observations per bin on each side (else Inconclusive).
- custom: the provider's value within [min, max] (the operator's own rule, imported).
Overall: Failed if any check failed, else Inconclusive if any was, else Passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

# The judge's own results, numbers and samples check: only the rules of the checks differ.
from canarium.analysis.judge import (
    CUSTOM_CHECKS_NOT_RUN,
    FAILED,
    INCONCLUSIVE,
    PASSED,
    Judgement,
    _inconclusive,
    _Result,
    check_custom,
    check_samples,
    measurement,
    num,
)
from canarium.analysis.samples import RevisionMetrics
from canarium.analysis.stats import align, histogram_quantile
from canarium.api import AnalysisSpec, CustomCheck, Evidence, Measurement, Verdict
from canarium_serving.metrics_contract import psi

DEFAULT_MAX_ERROR_RATE = 0.01
"""errorRate's limit when the policy sets no `max` (the README's example policy)."""
DEFAULT_MAX_MS = 200.0
"""latencyP99's limit when the policy sets no `maxMs` (the README's example policy)."""
MIN_PER_BIN = 20
"""The old drift rule: PSI only with at least this many observations per bin on each side."""


def _at_most(value: float, limit: float, what: str) -> _Result:
    if value <= limit:
        return _Result(PASSED, value, f"{what} {num(value)} <= {num(limit)}")
    return _Result(FAILED, value, f"{what} {num(value)} > {num(limit)}")


def check_error_rate(canary: RevisionMetrics, limit: float) -> _Result:
    if canary.requests <= 0:
        return _inconclusive("no canary requests")
    rate = canary.errors / canary.requests
    return _at_most(
        rate, limit, f"{num(canary.errors)} non-2xx of {num(canary.requests)} requests:"
    )


def check_latency(canary: RevisionMetrics, limit_ms: float) -> _Result:
    buckets = canary.latency_buckets
    p99 = histogram_quantile(0.99, buckets)
    if p99 is None:
        return _inconclusive("no latency observations")
    finite = [le for le in buckets if math.isfinite(le)]
    in_finite = max(buckets[le] for le in finite)
    if in_finite < 0.99 * max(in_finite, buckets[math.inf]):
        # The p99 lies above the highest bucket: only a lower bound is known.
        top_ms = max(finite) * 1000.0
        if top_ms >= limit_ms:
            return _Result(FAILED, top_ms, f"p99 > {num(top_ms)} ms (the highest bucket)")
        return _inconclusive(
            f"p99 above the highest bucket ({num(top_ms)} ms), cannot compare with "
            f"{num(limit_ms)} ms",
            top_ms,
        )
    return _at_most(p99 * 1000.0, limit_ms, "p99 ms")


def _too_few(what: str, count: float, bins: int) -> str | None:
    need = MIN_PER_BIN * max(bins, 1)
    if count < need:
        return f"{num(count)} {what} < {need} for a reliable PSI over {bins} bins"
    return None


def _class_psi(canary: RevisionMetrics, stable: RevisionMetrics) -> tuple[float, str] | str | None:
    """Largest PSI over classifier outputs; None without them; a reason when not comparable."""
    outputs = sorted(
        {o for o, _ in canary.prediction_classes} | {o for o, _ in stable.prediction_classes}
    )
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
            f"stable has {num(stable.requests)} requests < minSamples {min_samples}"
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
        parts.append(f">= {num(check.min)}")
    if check.max is not None:
        parts.append(f"<= {num(check.max)}")
    return " and ".join(parts)


def fixed_threshold_judge(
    analysis: AnalysisSpec,
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    now: datetime,
    custom_values: Mapping[str, float | None] | None = None,
    no_data: str = "no canary metrics in this window",
    evidence: Sequence[Evidence] = (),
) -> Judgement:
    """Judge one window on its own against fixed thresholds (`evidence` is ignored, and none
    is returned): `canarium.analysis.judge.judge`'s signature, for `canarium.replay.judged_by`."""
    del evidence  # every interval stands alone
    checks = analysis.checks
    measurements: list[Measurement] = []

    def add(check: str, threshold: str, result: _Result) -> None:
        measurements.append(measurement(check, threshold, result, now))

    min_samples = analysis.min_samples
    hold, samples = check_samples(canary, min_samples, no_data)
    add("samples", f">= {min_samples}", samples)

    def run(check: str, threshold: str, result: _Result) -> None:
        if hold and result.verdict != INCONCLUSIVE:
            result = _inconclusive(f"{hold} ({result.reason})", result.value)
        add(check, threshold, result)

    data = canary or RevisionMetrics()
    if checks.error_rate is not None:
        limit = checks.error_rate.max
        limit = DEFAULT_MAX_ERROR_RATE if limit is None else limit
        run("errorRate", f"<= {num(limit)}", check_error_rate(data, limit))
    if checks.latency_p99 is not None:
        limit_ms = checks.latency_p99.max_ms
        limit_ms = DEFAULT_MAX_MS if limit_ms is None else limit_ms
        run("latencyP99", f"<= {num(limit_ms)} ms", check_latency(data, limit_ms))
    if checks.prediction_drift is not None:
        limit = checks.prediction_drift.max_psi
        run(
            "predictionDrift",
            f"<= {num(limit)}",
            check_prediction_drift(data, stable, limit, min_samples),
        )
    if checks.data_drift is not None:
        limit = checks.data_drift.max_psi
        run("dataDrift", f"<= {num(limit)}", check_data_drift(data, limit))
    no_value = (
        CUSTOM_CHECKS_NOT_RUN if custom_values is None else "no data (the query returned nothing)"
    )
    for custom in checks.custom:
        found = check_custom(custom, (custom_values or {}).get(custom.name), no_value)
        run(
            custom.name,
            _custom_threshold(custom),
            _Result(found.verdict, found.value, found.reason),
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
