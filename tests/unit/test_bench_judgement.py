"""The judgement benchmark's simulator and its fixed-threshold baseline judge
(tests/bench/bench_judgement.py, tests/bench/fixed_threshold_judge.py)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from canarium.analysis import RevisionMetrics
from canarium.api import AnalysisSpec
from canarium.replay import START
from canarium_serving.metrics import LATENCY_BUCKETS

from tests.bench.bench_judgement import (
    CAP_S,
    Cell,
    SimulatedTraffic,
    goals,
    grid,
    latency_probabilities,
    one_rollout,
    psi_of,
    run_grid,
)
from tests.bench.fixed_threshold_judge import fixed_threshold_judge

ERRORS = Cell("errors", 100.0, "worse", "errors 0.5% x10", 0.005, 0.05, base_error=0.005, factor=10)


def test_latency_probabilities_cover_the_serving_buckets() -> None:
    probs = latency_probabilities(0.05)
    assert len(probs) == len(LATENCY_BUCKETS) + 1
    assert math.isclose(float(probs.sum()), 1.0)
    # median 50 ms: half of the mass at or below the 0.05 bound
    below = float(probs[: LATENCY_BUCKETS.index(0.05) + 1].sum())
    assert below == pytest.approx(0.5, abs=1e-9)


def test_psi_of_the_drift_scenario() -> None:
    assert psi_of((0.5, 0.3, 0.2), (0.25, 0.25, 0.5)) == pytest.approx(0.457, abs=1e-3)


def test_traffic_is_the_same_for_the_same_seed_and_split_by_weight() -> None:
    def windows(seed: tuple[int, ...]) -> list[tuple[float, float, float]]:
        source = SimulatedTraffic(ERRORS, seed)
        assert source(START, 10.0, True) is not None  # the baseline
        out = []
        for k in range(1, 4):
            window = source(START + timedelta(seconds=30 * k), 10.0, False)
            assert window is not None
            assert window.result is not None
            canary, stable = window.result.canary, window.result.stable
            assert canary is not None
            assert stable is not None
            out.append((canary.requests, canary.errors, stable.requests))
        return out

    first = windows((1, 2, 3))
    assert first == windows((1, 2, 3))
    assert first != windows((1, 2, 4))
    for canary, _, stable in first:
        assert 0.03 < canary / (canary + stable) < 0.2  # 10% of ~3000 requests


def test_no_stable_traffic_at_full_weight_and_none_after_the_cap() -> None:
    source = SimulatedTraffic(ERRORS, (1,))
    source(START, 100.0, True)
    window = source(START + timedelta(seconds=30), 100.0, False)
    assert window is not None
    assert window.result is not None
    assert window.result.stable is None
    assert source(START + timedelta(seconds=CAP_S), 100.0, False) is None


def test_fixed_judge_applies_per_window_thresholds() -> None:
    analysis = AnalysisSpec.model_validate(
        {"minSamples": 50, "checks": {"errorRate": {"max": 0.01}}}
    )
    now = START

    def verdict(requests: float, errors: float) -> str:
        canary = RevisionMetrics(requests=requests, errors=errors)
        stable = RevisionMetrics(requests=1000, errors=0)
        judgement = fixed_threshold_judge(analysis, canary, stable, now)
        assert judgement.evidence == []
        return judgement.verdict

    assert verdict(100, 1) == "Passed"
    assert verdict(100, 2) == "Failed"
    assert verdict(40, 40) == "Inconclusive"  # below minSamples: holds, never fails


@pytest.mark.parametrize("judge", ["new", "fixed"])
def test_a_ten_times_worse_canary_with_plenty_of_traffic_is_rolled_back(judge: str) -> None:
    run = one_rollout(ERRORS, judge, (15, 0, 0))
    assert run.outcome == "RolledBack"
    assert run.seconds <= 120


def test_quick_grid_reports_every_goal() -> None:
    cells = [c for c in grid(quick=True) if c.kind == "errors" and c.rps == 1000]
    results = run_grid(cells, lambda _: 2, seed=1, workers=1)
    assert [r.cell for r in results] == cells
    found = {g.name: g for g in goals(results)}
    assert set(found) == {"a", "b1", "b2", "c"}
    assert found["a"].judges["new"]["verdict"] in ("PASS", "MISS")
    assert found["c"].judges["new"]["verdict"] == "n/a"  # no 1.2x cell in the quick grid
