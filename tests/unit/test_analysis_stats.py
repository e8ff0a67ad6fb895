"""The arithmetic of the analysis (canarium.analysis.stats): Prometheus' histogram_quantile,
the population stability index, and histograms put on common buckets. Every expected value is
worked out by hand in a comment next to it."""

from __future__ import annotations

import math

import pytest
from canarium.analysis.stats import align, bucket_masses, histogram_quantile
from canarium_serving.metrics_contract import PSI_EPSILON, psi

INF = math.inf

# ---------------------------------------------------------------------------------------------
# histogram_quantile
# ---------------------------------------------------------------------------------------------


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.5: 100.0, INF: 100.0}
    # rank 99 lies in (0.2, 0.5]: 9 of that bucket's 10 observations -> 0.2 + 0.3 * 0.9
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.47)
    # rank 50 is the top of the first bucket, which starts at 0
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    # rank 70 lies in (0.1, 0.2]: 20 of its 40 -> 0.1 + 0.1 * 0.5
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)


def test_quantile_accepts_zero_and_one_and_rejects_anything_outside() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, INF: 100.0}
    assert histogram_quantile(0.0, buckets) == 0.0  # rank 0: the start of the first bucket
    # rank 100 = every observation: the top of the highest bucket that holds one
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"quantile must be within \[0, 1\], not 1.5"):
        histogram_quantile(1.5, buckets)
    with pytest.raises(ValueError, match=r"quantile must be within \[0, 1\], not -0.01"):
        histogram_quantile(-0.01, buckets)


def test_quantile_picks_the_first_bucket_that_reaches_the_rank() -> None:
    # rank 50 is reached by the first bucket already; the empty (0.1, 0.2] after it is not
    # where the median lies (Prometheus: the first bucket whose count >= rank).
    assert histogram_quantile(0.5, {0.1: 50.0, 0.2: 50.0, 0.5: 100.0, INF: 100.0}) == (
        pytest.approx(0.1)
    )
    # Every observation in the first bucket: q = 1 is that bucket's top, not +Inf's.
    assert histogram_quantile(1.0, {0.1: 100.0, 0.2: 100.0, INF: 100.0}) == pytest.approx(0.1)


def test_quantile_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, {0.1: 10.0, INF: 100.0}) == 0.1
    # rank 99 > 20 finite observations: the answer is the highest finite bound, 0.2
    assert histogram_quantile(0.99, {0.1: 10.0, 0.2: 20.0, INF: 100.0}) == 0.2


def test_quantile_without_observations_or_inf_bucket_is_none() -> None:
    assert histogram_quantile(0.99, {0.1: 0.0, INF: 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 5.0, 0.2: 7.0}) is None  # no +Inf bucket
    assert histogram_quantile(0.99, {INF: 10.0}) is None  # no finite bucket to interpolate in
    assert histogram_quantile(0.99, {}) is None


def test_quantile_with_a_first_bound_at_or_below_zero() -> None:
    buckets = {-1.0: 5.0, 0.0: 10.0, 1.0: 20.0, INF: 20.0}
    # The rank falls in the first bucket, whose bound is <= 0: that bound is the answer.
    assert histogram_quantile(0.25, buckets) == -1.0
    # rank 8 lies in (-1, 0]: 3 of its 5 -> -1 + 1 * 3/5; the first bound is only its start.
    assert histogram_quantile(0.4, buckets) == pytest.approx(-0.4)
    # rank 18 lies in (0, 1]: 8 of its 10 -> 0 + 1 * 0.8
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.8)
    # Only the first bound counts: below 0 here, the next one above it.
    assert histogram_quantile(0.25, {-1.0: 10.0, 1.0: 20.0, INF: 20.0}) == -1.0


def test_quantile_of_a_single_observation() -> None:
    assert histogram_quantile(0.5, {0.1: 1.0, INF: 1.0}) == pytest.approx(0.05)


def test_quantile_zero_with_an_empty_first_bucket_is_its_bound() -> None:
    # rank 0 is reached by the empty first bucket: no division by its zero count.
    assert histogram_quantile(0.0, {0.1: 0.0, 0.2: 10.0, INF: 10.0}) == 0.1


def test_quantile_makes_counts_monotonic_first() -> None:
    # Counts as scraped: 5, 4, 10, 10 -> monotonic 5, 5, 10, 10. rank 8 lies in (0.2, 0.4],
    # which holds 10 - 5 = 5 observations, 3 of them up to the rank: 0.2 + 0.2 * 3/5 = 0.32.
    skewed = {0.1: 5.0, 0.2: 4.0, 0.4: 10.0, INF: 10.0}
    assert histogram_quantile(0.8, skewed) == pytest.approx(0.32)
    # A +Inf count below a finite one: the total is the finite one, 10; rank 5 -> 0.1 * 5/10.
    assert histogram_quantile(0.5, {0.1: 10.0, INF: 8.0}) == pytest.approx(0.05)
    assert histogram_quantile(0.5, {0.1: 10.0, 0.2: 8.0, INF: 10.0}) == pytest.approx(0.05)


# ---------------------------------------------------------------------------------------------
# PSI
# ---------------------------------------------------------------------------------------------


def test_psi_against_hand_computed_values() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert expected == pytest.approx(0.274653, abs=1e-6)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    # Counts are normalised: the same distributions as counts.
    assert psi([50, 50], [10, 30]) == pytest.approx(expected)
    assert psi([1, 2, 3], [1, 2, 3]) == 0.0


def test_psi_floors_empty_buckets_on_either_side() -> None:
    assert PSI_EPSILON == 1e-4
    # An empty bucket is floored at 1e-4: (1e-4 - 0.5) ln(1e-4/0.5) + (1 - 0.5) ln(1/0.5)
    floored = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert floored == pytest.approx(4.6043, abs=1e-4)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(floored)
    # The same bucket empty on the expected side instead: (0.5 - 1e-4) ln(0.5/1e-4) + ...
    assert psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx(floored)
    # Another floor: (0.01 - 0.5) ln(0.01/0.5) + 0.5 ln 2
    assert psi([0.5, 0.5], [0.0, 1.0], epsilon=0.01) == pytest.approx(
        -0.49 * math.log(0.02) + 0.5 * math.log(2)
    )


def test_psi_rejects_different_buckets_and_empty_distributions() -> None:
    with pytest.raises(ValueError, match=r"^distributions must have the same buckets$"):
        psi([1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^distributions must not be empty$"):
        psi([0.0, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^distributions must not be empty$"):
        psi([0.5, 0.5], [0.0, 0.0])


# ---------------------------------------------------------------------------------------------
# Per-bucket masses and alignment of histograms
# ---------------------------------------------------------------------------------------------


def test_bucket_masses_in_le_order() -> None:
    assert bucket_masses({1.0: 2.0, 2.0: 5.0, INF: 6.0}) == [2.0, 3.0, 1.0]
    assert bucket_masses({INF: 6.0, 2.0: 5.0, 1.0: 2.0}) == [2.0, 3.0, 1.0]
    assert bucket_masses({}) == []


def test_bucket_masses_never_negative_after_a_skewed_step() -> None:
    # 5, then 3 (skewed scrape: a step of -2 -> 0), then 6: 1 above the highest count so far.
    assert bucket_masses({1.0: 5.0, 2.0: 3.0, 3.0: 6.0, INF: 6.0}) == [5.0, 0.0, 1.0, 0.0]


def test_align_same_edges_as_they_are() -> None:
    assert align({1.0: 2.0, INF: 4.0}, {1.0: 1.0, INF: 2.0}) == ([2.0, 2.0], [1.0, 1.0])


def test_align_different_edges_interpolates_within_the_common_range() -> None:
    # Union of the edges within the common finite range [1, 3], interpolated.
    first = {1.0: 10.0, 3.0: 30.0, INF: 40.0}  # 10 | 20 in (1,3] | 10
    second = {1.0: 0.0, 2.0: 10.0, 4.0: 20.0, INF: 20.0}
    masses = align(first, second)
    assert masses is not None
    # first at 2 = 10 + 20 * (2 - 1) / (3 - 1) = 20
    assert masses[0] == pytest.approx([10.0, 10.0, 10.0, 10.0])  # le 1, 2, 3, +Inf
    # second at 3 = 10 + 10 * (3 - 2) / (4 - 2) = 15
    assert masses[1] == pytest.approx([0.0, 10.0, 5.0, 5.0])


def test_align_keeps_open_ended_buckets_whole() -> None:
    # second's edge 0.5 is below first's lowest edge: its mass up to 1 is one bucket (8), and
    # its edge 5 is above first's highest: everything above 3 is one bucket (20 - 12 = 8).
    first = {1.0: 10.0, 3.0: 30.0, INF: 40.0}
    second = {0.5: 4.0, 1.0: 8.0, 3.0: 12.0, 5.0: 18.0, INF: 20.0}
    assert align(first, second) == ([10.0, 20.0, 10.0], [8.0, 4.0, 8.0])


def test_align_ranges_touching_at_one_edge() -> None:
    # The finite ranges [1, 2] and [2, 3] share the edge 2: two buckets, below and above it.
    first = {1.0: 10.0, 2.0: 20.0, INF: 30.0}
    second = {2.0: 5.0, 3.0: 10.0, INF: 10.0}
    assert align(first, second) == ([20.0, 10.0], [5.0, 5.0])
    # One side with a single finite edge, inside the other's range.
    single = {2.0: 4.0, INF: 8.0}
    wide = {1.0: 1.0, 2.0: 3.0, 3.0: 5.0, INF: 6.0}
    assert align(single, wide) == ([4.0, 4.0], [3.0, 3.0])
    assert align(wide, single) == ([3.0, 3.0], [4.0, 4.0])


def test_align_without_common_range_or_inf_bucket_is_none() -> None:
    assert align({1.0: 1.0, INF: 2.0}, {5.0: 1.0, INF: 2.0}) is None  # no overlap
    assert align({INF: 5.0}, {1.0: 2.0, INF: 5.0}) is None  # no finite edge on one side
    assert align({1.0: 2.0, INF: 5.0}, {INF: 5.0}) is None
    assert align({1.0: 2.0, 2.0: 3.0}, {1.0: 1.0, INF: 3.0}) is None  # first has no +Inf
    assert align({1.0: 1.0, INF: 3.0}, {1.0: 2.0, 2.0: 3.0}) is None  # second has no +Inf
