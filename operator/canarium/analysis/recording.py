"""A rollout's analysis as a recording: every interval's window counts, canary and stable, in
a documented JSON format that `canarium policy replay` reads and the operator writes (the
ConfigMap `<name>-analysis-recording`, `kubectl canarium recording NAME`). Pure.

    {"apiVersion": "canarium.dev/v1alpha1", "kind": "AnalysisRecording",
     "metadata": {"namespace": "ml", "name": "iris"},
     "canary": "iris-7d9c", "stable": "iris-5f2a",
     "windows": [
       {"time": "2026-12-03T10:00:00Z", "weight": 10, "baseline": true},
       {"time": "2026-12-03T10:00:30Z", "weight": 10,
        "canary": {"requests": 61, "errors": 1,
                   "latency": {"0.005": 40, "0.01": 58, "+Inf": 61},
                   "predictionClasses": {"label": {"0": 20, "1": 21, "2": 20}}},
        "stable": {...}, "custom": {"gpu-util": 0.4}}]}

A window is one analysis interval: `baseline` marks the first snapshot of a rollout's windows
(no counts yet); otherwise `canary` and `stable` hold the counts within the interval (absent:
no data, with `noData` saying why), `custom` the custom checks' values (absent: the provider
runs none). Histograms are cumulative, keyed by their upper bound (`+Inf` included), as
Prometheus exposes them; `weight` is the canary's share of the traffic (percent) then, for
reading only. Counts are what `RevisionMetrics` holds; `referenceInputs`, `referenceClasses`
and `referenceValues` are the model's reference fractions (for dataDrift).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

from canarium.analysis.samples import (
    Buckets,
    MeasuredWindow,
    RevisionMetrics,
    WindowResult,
    bound_key,
    parse_bound,
)

MAX_WINDOWS = 2000
"""The most windows a recording keeps (the oldest go first): 16 hours of 30 s intervals."""

MAX_BYTES = 900_000
"""The most a recording's JSON may take (a ConfigMap holds at most 1 MiB)."""
RECORDING_KEY = "recording.json"
"""The key of the recording in its ConfigMap."""

Histogram = dict[str, NonNegativeFloat]


def recording_name(deployment: str) -> str:
    """The ConfigMap that holds a ModelDeployment's analysis recording."""
    return f"{deployment}-analysis-recording"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RecordedMetrics(_Model):
    """One revision's counts within a window (RevisionMetrics)."""

    requests: NonNegativeFloat = 0.0
    errors: NonNegativeFloat = 0.0
    latency: Histogram = Field(default_factory=dict)
    prediction_classes: dict[str, dict[str, NonNegativeFloat]] = Field(
        default_factory=dict, alias="predictionClasses"
    )
    prediction_values: dict[str, Histogram] = Field(default_factory=dict, alias="predictionValues")
    input_features: dict[str, Histogram] = Field(default_factory=dict, alias="inputFeatures")
    reference_inputs: dict[str, Histogram] = Field(default_factory=dict, alias="referenceInputs")
    reference_classes: dict[str, dict[str, NonNegativeFloat]] = Field(
        default_factory=dict, alias="referenceClasses"
    )
    reference_values: dict[str, Histogram] = Field(default_factory=dict, alias="referenceValues")
    pods: int = Field(0, ge=0)


class RecordedWindow(_Model):
    """One analysis interval."""

    time: datetime
    weight: float | None = Field(
        None, ge=0.0, le=100.0, description="The canary's weight (setWeight) then, percent."
    )
    effective_weight: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        alias="effectiveWeight",
        description="The share of traffic it really got then (ready pods), percent.",
    )
    canary_replicas: int | None = Field(
        None, ge=0, alias="canaryReplicas", description="The canary's desired pods then."
    )
    canary_ready: int | None = Field(
        None, ge=0, alias="canaryReady", description="Its ready pods then."
    )
    baseline: bool = False
    canary: RecordedMetrics | None = None
    stable: RecordedMetrics | None = None
    custom: dict[str, float | None] | None = None
    no_data: str | None = Field(None, alias="noData")


class RecordingMeta(_Model):
    namespace: str | None = None
    name: str | None = None


class Recording(_Model):
    """A rollout's windows, oldest first."""

    api_version: Literal["canarium.dev/v1alpha1"] = Field(
        "canarium.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["AnalysisRecording"] = "AnalysisRecording"
    metadata: RecordingMeta = Field(default_factory=RecordingMeta)
    canary: str | None = Field(None, description="The canary revision the windows measured.")
    stable: str | None = Field(None, description="The stable revision it was compared with.")
    replicas: int | None = Field(
        None, ge=1, description="spec.serving.replicas (the replicas router's arithmetic)."
    )
    windows: list[RecordedWindow] = Field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(
            by_alias=True, mode="json", exclude_none=True, exclude_defaults=False
        )


def _buckets(histogram: Histogram) -> Buckets:
    return {parse_bound(k): v for k, v in histogram.items()}


def _histogram(buckets: Buckets) -> Histogram:
    return {bound_key(le): v for le, v in sorted(buckets.items())}


def _classes(flat: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    nested: dict[str, dict[str, float]] = {}
    for (output, cls), value in sorted(flat.items()):
        nested.setdefault(output, {})[cls] = value
    return nested


def _flat(nested: dict[str, dict[str, float]]) -> dict[tuple[str, str], float]:
    return {(o, c): v for o, classes in nested.items() for c, v in classes.items()}


def metrics_to_record(metrics: RevisionMetrics) -> RecordedMetrics:
    return RecordedMetrics(
        requests=metrics.requests,
        errors=metrics.errors,
        latency=_histogram(metrics.latency_buckets),
        prediction_classes=_classes(metrics.prediction_classes),
        prediction_values={k: _histogram(v) for k, v in metrics.prediction_value_buckets.items()},
        input_features={k: _histogram(v) for k, v in metrics.input_feature_buckets.items()},
        reference_inputs={k: _histogram(v) for k, v in metrics.reference_input_ratios.items()},
        reference_classes=_classes(metrics.reference_prediction_class_ratios),
        reference_values={
            k: _histogram(v) for k, v in metrics.reference_prediction_value_ratios.items()
        },
        pods=metrics.pods,
    )


def record_to_metrics(record: RecordedMetrics) -> RevisionMetrics:
    return RevisionMetrics(
        requests=record.requests,
        errors=record.errors,
        latency_buckets=_buckets(record.latency),
        prediction_classes=_flat(record.prediction_classes),
        prediction_value_buckets={k: _buckets(v) for k, v in record.prediction_values.items()},
        input_feature_buckets={k: _buckets(v) for k, v in record.input_features.items()},
        reference_input_ratios={k: _buckets(v) for k, v in record.reference_inputs.items()},
        reference_prediction_class_ratios=_flat(record.reference_classes),
        reference_prediction_value_ratios={
            k: _buckets(v) for k, v in record.reference_values.items()
        },
        pods=record.pods,
    )


@dataclass(frozen=True)
class Traffic:
    """The canary's share of the traffic and its pods when a window was measured."""

    weight: float | None = None
    effective_weight: float | None = None
    replicas: int | None = None
    ready: int | None = None


def window_to_record(window: MeasuredWindow, traffic: Traffic = Traffic()) -> RecordedWindow:
    """A measured window as a recording keeps it."""
    context = {
        "weight": traffic.weight,
        "effective_weight": traffic.effective_weight,
        "canary_replicas": traffic.replicas,
        "canary_ready": traffic.ready,
    }
    if window.result is None:
        return RecordedWindow(time=window.time, baseline=True, **context)
    result = window.result
    return RecordedWindow(
        time=window.time,
        **context,
        canary=None if result.canary is None else metrics_to_record(result.canary),
        stable=None if result.stable is None else metrics_to_record(result.stable),
        custom=None if window.custom is None else dict(window.custom),
        no_data=window.no_data if result.canary is None else None,
    )


def record_to_window(record: RecordedWindow) -> MeasuredWindow:
    """A recorded window as the judge reads it."""
    if record.baseline:
        return MeasuredWindow(record.time, None)
    result = WindowResult(
        canary=None if record.canary is None else record_to_metrics(record.canary),
        stable=None if record.stable is None else record_to_metrics(record.stable),
    )
    if record.no_data is not None:
        return MeasuredWindow(record.time, result, record.custom, record.no_data)
    return MeasuredWindow(record.time, result, record.custom)


def appended(
    recording: Recording | None, canary: str, stable: str | None, window: RecordedWindow
) -> Recording:
    """The recording with one more window; a window of another canary starts a new one (a
    recording holds one rollout, bake included)."""
    if recording is None or recording.canary != canary:
        recording = Recording(
            metadata=recording.metadata if recording else RecordingMeta(),
            canary=canary,
            stable=stable,
        )
    windows = [*recording.windows, window][-MAX_WINDOWS:]
    return recording.model_copy(update={"windows": windows})


def fitted(recording: Recording, max_bytes: int = MAX_BYTES) -> str:
    """The recording as JSON within `max_bytes`: the oldest windows go first."""
    windows = list(recording.windows)
    while True:
        text = recording.model_copy(update={"windows": windows}).model_dump_json(
            by_alias=True, exclude_none=True
        )
        if len(text.encode()) <= max_bytes or not windows:
            return text
        windows = windows[max(len(windows) // 10, 1) :]
