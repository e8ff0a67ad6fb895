"""The operator benchmark's reading of the work-queue metrics (tests/bench/bench_operator.py):
what it prints must be what the histogram says between two scrapes."""

from __future__ import annotations

import math

from tests.bench.bench_operator import queue_wait

INF = math.inf


def test_queue_wait_is_the_difference_between_two_snapshots() -> None:
    before = (10.0, 1.0, {0.01: 5.0, 0.1: 9.0, 1.0: 10.0, INF: 10.0})
    # 100 more keys: 75 within 10 ms, 20 more within 100 ms, 5 more within 1 s; 2 s in all.
    after = (110.0, 3.0, {0.01: 80.0, 0.1: 104.0, 1.0: 110.0, INF: 110.0})
    assert queue_wait(before, after) == "mean 20 ms, p99 <= 1 s, of 100"
    # 99 of the 100 within 100 ms: that bound.
    within = (110.0, 3.0, {0.01: 80.0, 0.1: 108.0, 1.0: 110.0, INF: 110.0})
    assert queue_wait(before, within) == "mean 20 ms, p99 <= 0.1 s, of 100"
    # Above every finite bound.
    slow = (110.0, 3.0, {0.01: 5.0, 0.1: 9.0, 1.0: 10.0, INF: 110.0})
    assert queue_wait(before, slow) == "mean 20 ms, p99 <= inf s, of 100"


def test_no_queue_wait_without_metrics_or_keys() -> None:
    snapshot = (10.0, 1.0, {INF: 10.0})
    assert queue_wait(None, snapshot) is None
    assert queue_wait(snapshot, None) is None
    assert queue_wait(snapshot, snapshot) is None
