"""The arithmetic of the analysis: quantiles of Prometheus histograms and the alignment of two
histograms for the population stability index (PSI, `canarium_serving.metrics_contract.psi`,
shared with the model server). Pure functions on plain numbers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (le -> count, +Inf included), exactly as
    Prometheus' `histogram_quantile` computes it: linear interpolation within the bucket that
    holds the rank; the lowest bucket starts at 0 (unless its bound is <= 0, then that bound is
    the answer); a rank in the +Inf bucket answers the highest finite bound. Non-monotonic
    counts (scrapes at slightly different times) are made monotonic first.

    None when there is nothing to compute from (no +Inf bucket, or no observations).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {q}")
    ordered = sorted(buckets.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    bounds = [le for le, _ in ordered]
    counts: list[float] = []
    for _, count in ordered:
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(counts) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if index == 0 else bounds[index - 1]
    below = 0.0 if index == 0 else counts[index - 1]
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return start + (bounds[index] - start) * (rank - below) / in_bucket


def bucket_masses(cumulative: Mapping[float, float]) -> list[float]:
    """Per-bucket amounts, in `le` order, of a cumulative histogram (negative steps, from
    rounding or skewed scrapes, become 0)."""
    out, previous = [], 0.0
    for _, value in sorted(cumulative.items()):
        out.append(max(value - previous, 0.0))
        previous = max(previous, value)
    return out


def _cdf_at(points: Sequence[tuple[float, float]], x: float) -> float:
    """A cumulative histogram's value at x, by linear interpolation between finite edges.
    `points` are the finite (le, cumulative) pairs in order (distinct edges: they come from a
    mapping) and x lies within their range."""
    for (le0, c0), (le1, c1) in itertools.pairwise(points):
        if x <= le1:  # the first bucket that reaches x holds it (x >= the lowest edge)
            return c0 + (c1 - c0) * (x - le0) / (le1 - le0)
    return points[0][1]  # a single edge, so x is that edge


def align(
    first: Mapping[float, float], second: Mapping[float, float]
) -> tuple[list[float], list[float]] | None:
    """Two cumulative histograms (counts or fractions, +Inf included) as per-bucket amounts
    over common buckets, for `psi`.

    Same `le` values: the buckets as they are. Different ones (two model versions with their
    own reference edges): the common buckets are the union of the edges within the range both
    histograms cover with finite edges, plus one bucket below and one above it; each side's
    cumulative value at an edge it lacks is interpolated linearly within its own bucket (as
    `histogram_quantile` does). Open-ended buckets are never split, so no mass is invented.
    None when the finite ranges do not overlap (no honest comparison is possible).
    """
    if set(first) == set(second):
        return bucket_masses(first), bucket_masses(second)
    f_points = sorted((le, c) for le, c in first.items() if math.isfinite(le))
    s_points = sorted((le, c) for le, c in second.items() if math.isfinite(le))
    f_total, s_total = first.get(math.inf), second.get(math.inf)
    if not f_points or not s_points or f_total is None or s_total is None:
        return None
    low = max(f_points[0][0], s_points[0][0])
    high = min(f_points[-1][0], s_points[-1][0])
    if low > high:
        return None
    edges = sorted({le for le, _ in f_points + s_points if low <= le <= high})
    f_cum = {le: _cdf_at(f_points, le) for le in edges}
    s_cum = {le: _cdf_at(s_points, le) for le in edges}
    f_cum[math.inf], s_cum[math.inf] = f_total, s_total
    return bucket_masses(f_cum), bucket_masses(s_cum)
