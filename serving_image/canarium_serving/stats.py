"""Reference statistics: the one binning rule shared by model packaging and live metrics.

A histogram here has `edges` = the finite bucket upper bounds (Prometheus' `le`, ascending) and
one more bucket for everything above the last edge (`le="+Inf"`). A value v falls in the first
bucket whose edge is >= v, exactly as a Prometheus histogram counts it, so the live counts on
/metrics and the reference fractions in the model file can be compared bucket by bucket
(`metrics_contract.psi`).

The reference document these go into: `metrics_contract.ReferenceStatistics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quantile_edges(values: np.ndarray[Any, Any], bins: int) -> list[float]:
    """Bucket upper bounds that split `values` into about `bins` equally full buckets.

    Repeated quantiles (discrete or constant features) collapse, so a feature may get fewer
    buckets; the largest value is not an edge (it belongs to the +Inf bucket's left side).
    """
    finite = values[np.isfinite(values)].astype(np.float64, copy=False)
    if finite.size == 0 or bins < 2:
        return []
    qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    # 6 significant digits keep the `le` labels readable; the reference fractions are
    # computed with these rounded edges, so live and reference buckets stay identical.
    edges = sorted({float(f"{q:.6g}") for q in qs})
    top = float(finite.max())
    # An edge at the maximum would leave the +Inf bucket empty in the reference.
    return [e for e in edges if e < top] or [float(np.median(finite))]


def bucket_counts(values: np.ndarray[Any, Any], edges: list[float]) -> np.ndarray[Any, Any]:
    """Counts per bucket (len(edges) + 1) with Prometheus `le` semantics (v <= edge).

    Float values are compared in their own precision (an FP32 input of 1.7 is <= the edge
    1.7), as the server's live histograms do.
    """
    dtype = values.dtype if values.dtype.kind == "f" else np.dtype(np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=dtype), values, side="left")
    return np.bincount(idx.ravel(), minlength=len(edges) + 1)


def fractions(counts: np.ndarray[Any, Any]) -> list[float]:
    total = float(counts.sum())
    if total == 0:
        return [0.0] * len(counts)
    return [float(c) / total for c in counts]
