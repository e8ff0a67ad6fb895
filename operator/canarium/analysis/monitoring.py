"""Monitoring of a stable revision for drift (spec.monitoring). Pure.

While no rollout runs, the controller measures the stable revision's metrics one window at a
time (the same providers as a rollout's analysis: podMetrics, Prometheus) and hands each window
here. Its live inputs are compared with the model's reference histogram of every feature
(dataDrift) and its predictions with the reference distribution of every output (classes or a
regressor's histogram: predictionDrift), by PSI, with a rollout's rules:

- too few observations (fewer than judge.MIN_PER_BIN per bin) are inconclusive, never drift;
- a PSI is drift only when it is shown above maxPSI at the window's sample size
  (sequential.psi_critical at alpha, shared by the features and outputs tested), so the noise
  of a small window does not raise an alarm.

Each window is a fresh test (the alarm rate per window is at most alpha); `windows` drifted
windows in a row make the revision Drifted (sustained drift), and one window without drift
clears it. An inconclusive window changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from canarium_serving.metrics_contract import psi

from canarium.analysis import sequential
from canarium.analysis.judge import num, too_few
from canarium.analysis.samples import Buckets, RevisionMetrics
from canarium.analysis.stats import align
from canarium.api import MonitoringSpec
from canarium.api.status import (
    MAX_DRIFT_FINDINGS,
    DriftFinding,
    MonitoringStatus,
    MonitoringVerdict,
)

NO_DRIFT: MonitoringVerdict = "NoDrift"
DRIFTED: MonitoringVerdict = "Drifted"
INCONCLUSIVE: MonitoringVerdict = "Inconclusive"


@dataclass(frozen=True)
class MonitoringWindow:
    """What the controller measured of a monitored revision at `time`: None metrics when it
    took the first snapshot of a window (nothing to judge yet)."""

    revision: str
    time: datetime
    metrics: RevisionMetrics | None


@dataclass(frozen=True)
class _Tested:
    kind: Literal["input", "output"]
    name: str
    psi: float
    observations: float
    bins: int


@dataclass
class WindowDrift:
    """One window judged: the verdict, the PSI of what could be tested (worst first) and why."""

    verdict: MonitoringVerdict
    message: str
    findings: list[DriftFinding] = field(default_factory=list)


def _inputs(window: RevisionMetrics, skipped: list[str]) -> list[_Tested]:
    found = []
    for feature in sorted(window.reference_input_ratios):
        live = window.input_feature_buckets.get(feature, {})
        n = live.get(math.inf, 0.0)
        if n <= 0:
            skipped.append(f"no live values of feature {feature!r}")
            continue
        aligned = align(window.reference_input_ratios[feature], live)
        if aligned is None:
            skipped.append(f"feature {feature!r}: live and reference buckets differ")
            continue
        bins = len(aligned[0])
        short = too_few(f"live values of {feature!r}", n, bins)
        if short:
            skipped.append(short)
            continue
        found.append(_Tested("input", feature, psi(*aligned), n, bins))
    return found


def _class_outputs(window: RevisionMetrics, skipped: list[str]) -> list[_Tested]:
    reference = window.reference_prediction_class_ratios
    found = []
    for output in sorted({o for o, _ in reference}):
        classes = sorted(
            {c for o, c in reference if o == output}
            | {c for o, c in window.prediction_classes if o == output}
        )
        expected = [reference.get((output, c), 0.0) for c in classes]
        actual = [window.prediction_classes.get((output, c), 0.0) for c in classes]
        n = sum(actual)
        short = too_few(f"predictions of {output!r}", n, len(classes))
        if short:
            skipped.append(short)
            continue
        found.append(_Tested("output", output, psi(expected, actual), n, len(classes)))
    return found


def _value_outputs(window: RevisionMetrics, skipped: list[str]) -> list[_Tested]:
    found = []
    for output in sorted(window.reference_prediction_value_ratios):
        live: Buckets = window.prediction_value_buckets.get(output, {})
        n = live.get(math.inf, 0.0)
        aligned = align(window.reference_prediction_value_ratios[output], live) if n > 0 else None
        if aligned is None:
            skipped.append(f"no comparable predictions of {output!r}")
            continue
        bins = len(aligned[0])
        short = too_few(f"predictions of {output!r}", n, bins)
        if short:
            skipped.append(short)
            continue
        found.append(_Tested("output", output, psi(*aligned), n, bins))
    return found


def judge_window(spec: MonitoringSpec, window: RevisionMetrics) -> WindowDrift:
    """The stable revision's drift in one window, against the model's reference statistics."""
    skipped: list[str] = []
    tested: list[tuple[_Tested, float]] = []  # with its maxPSI
    if spec.data_drift is not None:
        if not window.reference_input_ratios:
            skipped.append("the model has no reference input statistics")
        tested += [(t, spec.data_drift.max_psi) for t in _inputs(window, skipped)]
    if spec.prediction_drift is not None:
        if not (
            window.reference_prediction_class_ratios or window.reference_prediction_value_ratios
        ):
            skipped.append("the model has no reference prediction statistics")
        outputs = _class_outputs(window, skipped) + _value_outputs(window, skipped)
        tested += [(t, spec.prediction_drift.max_psi) for t in outputs]
    if not tested:
        why = "; ".join(skipped[:3]) or "no observations"
        return WindowDrift(INCONCLUSIVE, f"too little to judge: {why}")
    level = spec.alpha / len(tested)
    findings = []
    for item, limit in tested:
        allowed = sequential.psi_critical(limit, item.observations, item.bins, level)
        findings.append(
            DriftFinding(
                kind=item.kind,
                name=item.name,
                psi=round(item.psi, 6),
                allowed=round(allowed, 6),
                observations=item.observations,
            )
        )
    findings.sort(key=lambda f: f.allowed - f.psi)
    drifted = [f for f in findings if f.psi > f.allowed]
    if drifted:
        named = ", ".join(
            f"{f.kind} {f.name!r} PSI {num(f.psi)} > {num(f.allowed)}" for f in drifted[:4]
        )
        more = f" and {len(drifted) - 4} more" if len(drifted) > 4 else ""
        message = f"drift shown at alpha {num(spec.alpha)}: {named}{more}"
        return WindowDrift(DRIFTED, message, findings[:MAX_DRIFT_FINDINGS])
    worst = findings[0]
    message = (
        f"no drift in {len(findings)} tested: worst {worst.kind} {worst.name!r} PSI "
        f"{num(worst.psi)} (at most {num(worst.allowed)} allowed with "
        f"{num(worst.observations)} observations)"
    )
    return WindowDrift(NO_DRIFT, message, findings[:MAX_DRIFT_FINDINGS])


# --- the window cycle: when to snapshot, when to judge ----------------------------------------


def due(
    spec: MonitoringSpec, status: MonitoringStatus | None, revision: str, now: datetime
) -> tuple[str | None, float]:
    """What the controller should do now for a monitored stable `revision`, and in how many
    seconds to look again: "baseline" (start a window: a revision not monitored yet), "measure"
    (the window has run its interval) or None (wait)."""
    interval = spec.interval_seconds
    if status is None or status.revision != revision or status.window_start is None:
        return "baseline", interval
    left = (status.window_start + timedelta(seconds=interval) - now).total_seconds()
    if left <= 0:
        return "measure", interval
    return None, left


def started(revision: str, now: datetime, previous: MonitoringStatus | None) -> MonitoringStatus:
    """The status once a window has started (its first snapshot taken)."""
    if previous is not None and previous.revision == revision:
        return previous.model_copy(update={"window_start": now})
    return MonitoringStatus(revision=revision, window_start=now)


def judged(
    spec: MonitoringSpec,
    previous: MonitoringStatus,
    drift: WindowDrift,
    now: datetime,
) -> MonitoringStatus:
    """The status after a window is judged; the next window starts now."""
    if drift.verdict == DRIFTED:
        consecutive = previous.consecutive_drifted + 1
    elif drift.verdict == NO_DRIFT:
        consecutive = 0
    else:  # inconclusive: neither drift nor evidence against it
        consecutive = previous.consecutive_drifted
    return MonitoringStatus(
        revision=previous.revision,
        window_start=now,
        last_window_time=now,
        windows=previous.windows + 1,
        consecutive_drifted=consecutive,
        last_verdict=drift.verdict,
        message=drift.message[:1024],
        findings=drift.findings if drift.findings else previous.findings,
    )


def is_drifted(spec: MonitoringSpec, status: MonitoringStatus) -> bool:
    """Sustained drift: `windows` drifted windows in a row."""
    return status.consecutive_drifted >= spec.windows
