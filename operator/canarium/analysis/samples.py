"""What a provider measures: the metrics of one revision, and the window between two scrapes.

`RevisionMetrics` holds the serving metrics of one revision (see serving_image/README.md,
"Metrics"), either cumulative since the pods started (one scrape, summed over the pods) or, for
a provider's `WindowResult`, the counts within one analysis window.

Counting in a window when pods come and go: the podMetrics provider keeps one `PodSample` per
pod and `window()` sums per-pod deltas, so

- a pod that was not there at the previous scrape (scaled up, or newly Ready) counts from zero;
- a pod that restarted (its process start time changed, or any of its counters went down)
  counts from zero;
- a pod that is gone loses only the increments since the previous scrape (a scrape-based
  provider cannot see them; Prometheus with a short scrape interval loses less);
- nothing ever goes negative.

Errors: `errors` counts every `/infer` answer that is not 2xx, client errors (4xx) included. A
canary whose model rejects inputs that the stable model accepts (a changed input schema,
stricter validation) answers those requests with 400, and that must fail the errorRate check
exactly as a crash would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

K = TypeVar("K")

Buckets = dict[float, float]
"""A histogram as Prometheus exposes it: `le` upper bound -> cumulative count (`+Inf` = math.inf
included). For reference ratios the values are cumulative fractions instead of counts."""


@dataclass(frozen=True)
class AnalysisTarget:
    """What to measure: the canary revision (or, during bake, the newly promoted one) and the
    stable revision it is compared with (None when there is none)."""

    namespace: str
    deployment: str
    canary_revision_hash: str
    stable_revision_hash: str | None
    canary_revision_name: str
    stable_revision_name: str | None
    interval_seconds: float


@dataclass(frozen=True)
class RevisionMetrics:
    """Serving metrics of one revision, summed over its pods (cumulative, or window counts)."""

    requests: float = 0.0
    """`/infer` requests, any status code."""
    errors: float = 0.0
    """`/infer` answers that were not 2xx: 5xx *and* 4xx (see the module doc)."""
    latency_buckets: Buckets = field(default_factory=dict)
    """Request latency histogram, seconds: le -> cumulative count, +Inf included."""
    prediction_classes: dict[tuple[str, str], float] = field(default_factory=dict)
    """(output, class) -> predicted rows, classifier outputs."""
    prediction_value_buckets: dict[str, Buckets] = field(default_factory=dict)
    """Regressor output -> le -> cumulative count."""
    input_feature_buckets: dict[str, Buckets] = field(default_factory=dict)
    """Input feature -> le -> cumulative count (buckets = the model's reference edges)."""
    reference_input_ratios: dict[str, Buckets] = field(default_factory=dict)
    """Feature -> le -> cumulative reference fraction (a gauge of the model, not a count)."""
    reference_prediction_class_ratios: dict[tuple[str, str], float] = field(default_factory=dict)
    """(output, class) -> reference fraction (gauge)."""
    reference_prediction_value_ratios: dict[str, Buckets] = field(default_factory=dict)
    """Regressor output -> le -> cumulative reference fraction (gauge)."""
    pods: int = 0
    """Pods the numbers come from."""

    @property
    def empty(self) -> bool:
        """True when no metric at all was seen (no series of the revision)."""
        return not (
            self.requests
            or self.latency_buckets
            or self.prediction_classes
            or self.prediction_value_buckets
            or self.input_feature_buckets
            or self.reference_input_ratios
            or self.reference_prediction_class_ratios
            or self.reference_prediction_value_ratios
        )


@dataclass(frozen=True)
class PodSample:
    """One scrape of one pod: its metrics (cumulative) and its process start time, which tells
    a restarted server from a live one."""

    pod: str
    metrics: RevisionMetrics
    start_time: float | None = None


@dataclass(frozen=True)
class WindowResult:
    """What a provider measured for one analysis interval. None = no data (no baseline yet, no
    pods, or the provider failed: see `errors`), which is judged Inconclusive, never Failed."""

    canary: RevisionMetrics | None
    stable: RevisionMetrics | None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MeasuredWindow:
    """One analysis interval as the controller measured it: what the judge reads, and what a
    recording keeps (`canarium.analysis.recording`)."""

    time: datetime
    result: WindowResult | None
    """None: the first snapshot of a window was taken (a baseline), nothing to judge yet."""
    custom: Mapping[str, float | None] | None = None
    """The custom checks' values by name; None when the provider runs no custom checks."""
    no_data: str = "no canary metrics in this window"
    """Why there are no canary numbers, when there are none."""


def bound_key(bound: float) -> str:
    """A histogram bound as text (JSON keys, status): "+Inf" or the float's repr."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def parse_bound(key: str) -> float:
    """The bound of `bound_key`'s text (a clear error for one that is not a number)."""
    if key in ("+Inf", "Inf", "inf"):
        return math.inf
    value = float(key)
    if math.isnan(value):
        raise ValueError(f"a histogram bound must be a number, not {key!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Deltas and sums
# ---------------------------------------------------------------------------------------------


def _counter_delta(after: float, before: float | None) -> float:
    """Increase of a counter; one that went down was reset and counts from zero."""
    if before is None or after < before:
        return after
    return after - before


def _histogram_delta(after: Buckets, before: Buckets | None) -> Buckets:
    """Bucket-wise increase of a cumulative histogram; if any bucket went down the histogram
    was reset and counts from zero."""
    if not before or any(after.get(le, 0.0) < count for le, count in before.items()):
        return dict(after)
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def _keyed_delta(after: Mapping[K, float], before: Mapping[K, float]) -> dict[K, float]:
    return {key: _counter_delta(value, before.get(key)) for key, value in after.items()}


def delta(after: RevisionMetrics, before: RevisionMetrics | None) -> RevisionMetrics:
    """The counts between two cumulative snapshots of the *same* pod (or of an aggregate that
    never loses members). `before` None counts from zero. Counters that went down count from
    zero (a restart); the reference ratios are gauges and are taken from `after`."""
    if before is None:
        return after
    requests_reset = after.requests < before.requests or after.errors < before.errors
    return RevisionMetrics(
        requests=after.requests if requests_reset else after.requests - before.requests,
        errors=after.errors if requests_reset else after.errors - before.errors,
        latency_buckets=_histogram_delta(after.latency_buckets, before.latency_buckets),
        prediction_classes=_keyed_delta(after.prediction_classes, before.prediction_classes),
        prediction_value_buckets={
            output: _histogram_delta(b, before.prediction_value_buckets.get(output))
            for output, b in after.prediction_value_buckets.items()
        },
        input_feature_buckets={
            feature: _histogram_delta(b, before.input_feature_buckets.get(feature))
            for feature, b in after.input_feature_buckets.items()
        },
        reference_input_ratios=after.reference_input_ratios,
        reference_prediction_class_ratios=after.reference_prediction_class_ratios,
        reference_prediction_value_ratios=after.reference_prediction_value_ratios,
        pods=after.pods,
    )


def _add_keyed(total: dict[K, float], part: Mapping[K, float]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value


def _add_histograms(total: dict[str, Buckets], part: Mapping[str, Buckets]) -> None:
    for name, buckets in part.items():
        _add_keyed(total.setdefault(name, {}), buckets)


def combine(parts: Iterable[RevisionMetrics]) -> RevisionMetrics:
    """The sum of several pods' metrics (counts add up; reference ratios, the same model's in
    every pod, are taken from the first pod that has them)."""
    requests = errors = 0.0
    pods = 0
    latency: Buckets = {}
    classes: dict[tuple[str, str], float] = {}
    values: dict[str, Buckets] = {}
    features: dict[str, Buckets] = {}
    ref_inputs: dict[str, Buckets] = {}
    ref_classes: dict[tuple[str, str], float] = {}
    ref_values: dict[str, Buckets] = {}
    for part in parts:
        requests += part.requests
        errors += part.errors
        pods += part.pods
        _add_keyed(latency, part.latency_buckets)
        _add_keyed(classes, part.prediction_classes)
        _add_histograms(values, part.prediction_value_buckets)
        _add_histograms(features, part.input_feature_buckets)
        ref_inputs = ref_inputs or dict(part.reference_input_ratios)
        ref_classes = ref_classes or dict(part.reference_prediction_class_ratios)
        ref_values = ref_values or dict(part.reference_prediction_value_ratios)
    return RevisionMetrics(
        requests=requests,
        errors=errors,
        latency_buckets=latency,
        prediction_classes=classes,
        prediction_value_buckets=values,
        input_feature_buckets=features,
        reference_input_ratios=ref_inputs,
        reference_prediction_class_ratios=ref_classes,
        reference_prediction_value_ratios=ref_values,
        pods=pods,
    )


def pod_delta(after: PodSample, before: PodSample | None) -> RevisionMetrics:
    """The counts of one pod since its previous sample; a new pod or a restarted process (its
    start time changed) counts from zero."""
    if before is None:
        return after.metrics
    restarted = (
        after.start_time is not None
        and before.start_time is not None
        and not math.isclose(after.start_time, before.start_time, abs_tol=1e-3)
    )
    return delta(after.metrics, None if restarted else before.metrics)


def window(after: Mapping[str, PodSample], before: Mapping[str, PodSample]) -> RevisionMetrics:
    """The counts of a revision between two scrapes: the sum of per-pod deltas over the pods
    scraped now (`after`, keyed by pod), each against its own previous sample in `before`."""
    return combine(pod_delta(sample, before.get(key)) for key, sample in after.items())
