"""Prometheus metrics of the model server, cheap on the hot path.

The server runs its requests on one event loop thread, so the counters here are plain Python
ints and numpy arrays updated without locks; a custom collector turns them into Prometheus
families only when /metrics is scraped. Per request that is a dict increment, one `bisect`, and
for the model-aware metrics a few vectorised numpy operations per batch (never a Python loop
over values). The families, their names and labels are the ones `metrics_contract` declares.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go_string

from . import metrics_contract as mc

# Prometheus' own formatting of `le` values ("0.5", "1.0", "+Inf"), typed.
_le = cast(Callable[[float], str], _float_to_go_string)

# Fine enough for a p99 anywhere in 0.5 ms .. 10 s (about 20% apart below 1 s).
LATENCY_BUCKETS: Final = (
    0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004, 0.005,
    0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
    0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# Used for a regressor's output when its model carries no reference histogram.
DEFAULT_VALUE_EDGES: Final = (
    -1000.0, -100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0,
)  # fmt: skip
# Status codes whose request counters exist (at 0) from the start. Prometheus' increase() cannot
# see the first increments of a series that appears only when they happen, which would hide a
# canary's first errors from the analysis (the stable code 200 would be counted, its 5xx/4xx
# not): initialise the counters of every code /infer answers (Prometheus' "initialise your
# counters" advice). Other codes still appear when first used.
INITIAL_CODES: Final = (200, 400, 404, 405, 413, 500, 503)
_SMALL_BATCH: Final = 4  # below this, Python's bisect beats numpy's per-call overhead
FLUSH_ROWS: Final = 512  # queued rows binned together (bounded memory, amortised numpy calls)


@dataclass(frozen=True, slots=True)
class Labels:
    model: str
    version: str
    deployment: str = ""
    namespace: str = ""
    revision: str = ""
    role: str = ""

    def values(self) -> list[str]:
        return [self.model, self.version, self.deployment, self.namespace, self.revision, self.role]


class _Histogram:
    """A histogram of scalar observations (one bisect per observation)."""

    __slots__ = ("buckets", "count", "counts", "le", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = list(buckets)
        self.le = [_le(b) for b in self.buckets] + ["+Inf"]
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for le, c in zip(self.le, self.counts, strict=True):
            acc += c
            out.append((le, float(acc)))
        return out


class _ColumnHistograms:
    """Histograms of several columns of a 2-D input at once, each with its own edges."""

    def __init__(self, names: list[str], columns: list[int], edges: list[list[float]]) -> None:
        self.names = names
        self.columns = np.asarray(columns, dtype=np.intp)
        self.all_columns = columns == list(range(len(columns)))
        self.edges = edges
        self.nbuckets = [len(e) + 1 for e in edges]
        width = max(self.nbuckets)
        self.width = width
        # Pad each row of edges with +inf: nothing is above +inf, so padding buckets stay empty.
        inner = np.full((len(edges), max(width - 1, 1)), np.inf, dtype=np.float64)
        for i, e in enumerate(edges):
            inner[i, : len(e)] = e
        self.inner = inner
        # Compare FP32 inputs with FP32 edges (as the reference was computed: see stats.py).
        self.inner32 = inner.astype(np.float32)
        self.offsets = np.arange(len(edges), dtype=np.intp) * width
        self.counts = np.zeros(len(edges) * width, dtype=np.int64)
        self.sums = np.zeros(len(edges), dtype=np.float64)
        self.count = 0
        self.le = [[_le(x) for x in e] + ["+Inf"] for e in edges]
        self.max_column = int(self.columns.max()) if columns else -1

    def observe(self, x: np.ndarray[Any, Any]) -> None:
        if x.ndim == 1:
            x = x.reshape(1, -1) if self.max_column > 0 else x.reshape(-1, 1)
        elif x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        if x.shape[1] <= self.max_column or x.dtype.kind not in "iuf":
            return
        if not self.all_columns or x.shape[1] != len(self.names):
            x = x[:, self.columns]
        n = x.shape[0]
        # bucket index = number of edges strictly below the value (Prometheus `le` rule)
        inner = self.inner32 if x.dtype == np.float32 else self.inner
        idx = (x[:, :, None] > inner[None, :, :]).sum(axis=2)
        idx += self.offsets
        self.counts += np.bincount(idx.ravel(), minlength=self.counts.size)
        self.sums += x.sum(axis=0, dtype=np.float64)
        self.count += n

    def families(self) -> Iterable[tuple[str, list[tuple[str, float]], float]]:
        counts = self.counts.reshape(len(self.names), self.width)
        for i, name in enumerate(self.names):
            cum = np.cumsum(counts[i, : self.nbuckets[i]])
            yield (
                name,
                list(zip(self.le[i], cum.astype(float).tolist(), strict=True)),
                float(self.sums[i]),
            )


class _ClassCounter:
    __slots__ = ("counts",)

    def __init__(self, classes: Sequence[str] = ()) -> None:
        self.counts: dict[str, int] = dict.fromkeys(classes, 0)

    def observe(self, labels: np.ndarray[Any, Any]) -> None:
        flat = labels.reshape(-1)
        if flat.size < _SMALL_BATCH:
            for value in flat.tolist():
                key = value.decode() if isinstance(value, bytes) else str(value)
                self.counts[key] = self.counts.get(key, 0) + 1
            return
        values, counts = np.unique(flat, return_counts=True)
        for value, c in zip(values.tolist(), counts.tolist(), strict=True):
            key = value.decode() if isinstance(value, bytes) else str(value)
            self.counts[key] = self.counts.get(key, 0) + c


@dataclass(slots=True)
class _ModelInfo:
    platform: str
    sha256: str
    uri: str


class ServingMetrics(Collector):
    """All metrics of one model server; register it in a registry and call the observe_*."""

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self._lv = labels.values()
        self.requests: dict[int, int] = dict.fromkeys(INITIAL_CODES, 0)
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch = _Histogram(BATCH_BUCKETS)
        self.ready = False
        self.info: _ModelInfo | None = None
        self._inputs: dict[str, _ColumnHistograms] = {}
        self._classes: dict[str, _ClassCounter] = {}
        self._values: dict[str, _ColumnHistograms] = {}
        self._reference: mc.ReferenceStatistics | None = None
        self._model_aware = False
        self._queued: list[
            tuple[Mapping[str, np.ndarray[Any, Any]], Mapping[str, np.ndarray[Any, Any]]]
        ] = []
        self._queued_rows = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # CPU seconds, memory, open fds

    # --- configuration (at model load) -----------------------------------------------------
    def configure_model(
        self,
        *,
        platform: str,
        sha256: str,
        uri: str,
        outputs: Sequence[tuple[str, str, tuple[int, ...]]],
        reference: mc.ReferenceStatistics | None,
    ) -> None:
        """Set up the model-aware metrics from the model's outputs and reference statistics.

        `outputs` are (name, V2 datatype, shape). Class counts go to integer/string outputs of
        one value per row, value histograms to float outputs of one value per row.
        """
        self.info = _ModelInfo(platform=platform, sha256=sha256, uri=uri)
        self._reference = reference
        ref_outputs = {o.name: o for o in reference.outputs} if reference else {}
        for name, datatype, shape in outputs:
            one_per_row = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
            if not one_per_row:
                continue
            ref = ref_outputs.get(name)
            if datatype == "BYTES" or datatype.startswith(("INT", "UINT")):
                classes = ref.classes if isinstance(ref, mc.ClassOutputReference) else ()
                self._classes[name] = _ClassCounter(classes)
            elif datatype.startswith("FP"):
                edges = ref.edges if isinstance(ref, mc.ValueOutputReference) else ()
                self._values[name] = _ColumnHistograms(
                    [name], [0], [list(edges or DEFAULT_VALUE_EDGES)]
                )
        by_input: dict[str, list[mc.FeatureReference]] = {}
        for feat in reference.features if reference else ():
            by_input.setdefault(feat.input, []).append(feat)
        for input_name, feats in by_input.items():
            self._inputs[input_name] = _ColumnHistograms(
                [f.name for f in feats], [f.column for f in feats], [list(f.edges) for f in feats]
            )
        self._model_aware = bool(self._inputs or self._classes or self._values)

    def observed_outputs(self) -> set[str]:
        """Outputs the metrics look at (computed on every request even when not asked for)."""
        return set(self._classes) | set(self._values)

    # --- hot path ------------------------------------------------------------------------
    def observe_request(self, code: int, seconds: float) -> None:
        self.requests[code] = self.requests.get(code, 0) + 1
        self.latency.observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch.observe(size)

    def observe_execution(
        self,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Mapping[str, np.ndarray[Any, Any]],
        rows: int,
    ) -> None:
        """One model execution: its batch size now, its inputs and outputs soon.

        The arrays are only queued here; they are binned together, vectorised, once
        FLUSH_ROWS rows are queued or when /metrics is scraped.
        """
        self.batch.observe(rows)
        if self._model_aware:
            self._queued.append((inputs, outputs))
            self._queued_rows += rows
            if self._queued_rows >= FLUSH_ROWS:
                self.flush()

    def flush(self) -> None:
        """Bin the queued inputs and outputs into the histograms and class counts."""
        queued, self._queued, self._queued_rows = self._queued, [], 0
        if not queued:
            return
        for name, hist in self._inputs.items():
            _observe_all(hist, [x[name] for x, _ in queued if name in x])
        for name, counter in self._classes.items():
            _observe_all(counter, [y[name].reshape(-1) for _, y in queued if name in y])
        for name, hist in self._values.items():
            _observe_all(hist, [y[name].reshape(-1, 1) for _, y in queued if name in y])

    # --- exposition ----------------------------------------------------------------------
    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        self.flush()
        lv = self._lv

        ready = GaugeMetricFamily(
            mc.MODEL_READY.name,
            "1 when the model is loaded and served",
            labels=_labels(mc.MODEL_READY),
        )
        ready.add_metric(lv, 1.0 if self.ready else 0.0)
        yield ready

        info = GaugeMetricFamily(
            mc.MODEL_INFO.name,
            "The served model (always 1), with its platform, sha256 and URI",
            labels=_labels(mc.MODEL_INFO),
        )
        if self.info is not None:
            info.add_metric([*lv, self.info.platform, self.info.sha256, self.info.uri], 1.0)
        yield info

        req = CounterMetricFamily(
            mc.REQUESTS.name,
            "Inference requests by HTTP status code (client errors included)",
            labels=_labels(mc.REQUESTS),
        )
        for code, n in sorted(self.requests.items()):
            req.add_metric([*lv, str(code)], float(n))
        yield req

        lat = HistogramMetricFamily(
            mc.REQUEST_DURATION.name,
            "Inference request latency in the server, from request to response",
            labels=_labels(mc.REQUEST_DURATION),
        )
        lat.add_metric(lv, self.latency.cumulative(), self.latency.sum)
        yield lat

        batch = HistogramMetricFamily(
            mc.INFERENCE_BATCH_SIZE.name,
            "Rows per model execution (after dynamic batching when it is on)",
            labels=_labels(mc.INFERENCE_BATCH_SIZE),
        )
        batch.add_metric(lv, self.batch.cumulative(), self.batch.sum)
        yield batch

        classes = CounterMetricFamily(
            mc.PREDICTION_CLASS.name,
            "Predicted class counts per classifier output",
            labels=_labels(mc.PREDICTION_CLASS),
        )
        for output, counter in self._classes.items():
            for cls, n in counter.counts.items():
                classes.add_metric([*lv, output, cls], float(n))
        yield classes

        values = HistogramMetricFamily(
            mc.PREDICTION_VALUE.name,
            "Predicted values of regressor outputs; buckets are the reference histogram's",
            labels=_labels(mc.PREDICTION_VALUE),
        )
        for output, hist in self._values.items():
            for _, buckets, total in hist.families():
                values.add_metric([*lv, output], buckets, total)
        yield values

        features = HistogramMetricFamily(
            mc.INPUT_FEATURE_VALUE.name,
            "Input feature values; buckets are the model's reference histogram's",
            labels=_labels(mc.INPUT_FEATURE_VALUE),
        )
        for hist in self._inputs.values():
            for feature, buckets, total in hist.families():
                features.add_metric([*lv, feature], buckets, total)
        yield features

        yield from self._reference_families(lv)

    def _reference_families(self, lv: list[str]) -> Iterable[Metric]:
        ref = self._reference
        samples = GaugeMetricFamily(
            mc.REFERENCE_SAMPLES.name,
            "Rows of the sample the model's reference statistics were computed from",
            labels=_labels(mc.REFERENCE_SAMPLES),
        )
        if ref is not None:
            samples.add_metric(lv, float(ref.samples))
        yield samples

        feat = GaugeMetricFamily(
            mc.REFERENCE_INPUT_FEATURE_RATIO.name,
            "Reference fraction of rows with feature value <= le (cumulative, like _bucket)",
            labels=_labels(mc.REFERENCE_INPUT_FEATURE_RATIO),
        )
        for f in ref.features if ref else ():
            for le, cum in _cumulative(f.edges, f.fractions):
                feat.add_metric([*lv, f.name, le], cum)
        yield feat

        cls = GaugeMetricFamily(
            mc.REFERENCE_PREDICTION_CLASS_RATIO.name,
            "Reference fraction of rows predicted as each class",
            labels=_labels(mc.REFERENCE_PREDICTION_CLASS_RATIO),
        )
        val = GaugeMetricFamily(
            mc.REFERENCE_PREDICTION_VALUE_RATIO.name,
            "Reference fraction of predicted values <= le (cumulative, like _bucket)",
            labels=_labels(mc.REFERENCE_PREDICTION_VALUE_RATIO),
        )
        for o in ref.outputs if ref else ():
            if isinstance(o, mc.ClassOutputReference):
                for c, frac in zip(o.classes, o.fractions, strict=True):
                    cls.add_metric([*lv, o.name, c], frac)
            else:
                for le, cum in _cumulative(o.edges, o.fractions):
                    val.add_metric([*lv, o.name, le], cum)
        yield cls
        yield val


def _labels(family: mc.Family) -> list[str]:
    return [*mc.BASE_LABELS, *family.labels]


def _cumulative(edges: Sequence[float], fracs: Sequence[float]) -> list[tuple[str, float]]:
    les = [_le(float(e)) for e in edges] + ["+Inf"]
    out, acc = [], 0.0
    for le, f in zip(les, fracs, strict=True):
        acc += f
        out.append((le, min(acc, 1.0)))
    return out


def _observe_all(
    target: _ColumnHistograms | _ClassCounter, arrays: list[np.ndarray[Any, Any]]
) -> None:
    if not arrays:
        return
    if len(arrays) > 1:
        try:
            target.observe(np.concatenate(arrays, axis=0))
            return
        except ValueError:  # trailing shapes differ (a model with free inner dimensions)
            pass
    for a in arrays:
        target.observe(a)
