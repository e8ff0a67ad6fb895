"""Judgement quality: the sequential judge against fixed per-interval thresholds (the Argo
Rollouts / Flagger way, tests/bench/fixed_threshold_judge.py), on simulated rollouts.

Every rollout runs the real state machine through `canarium.replay.replay` on an in-memory
cluster; only the traffic is simulated. Whenever the state machine asks for an analysis window,
requests arrive as a Poisson process (total req/s over the time since the last look), split
between canary and stable by the weight it asks for (binomial), with binomial errors,
multinomial latency buckets (lognormal latencies in the model server's own LATENCY_BUCKETS) and
multinomial predicted classes (a 3-class classifier). During the bake stable takes no traffic.
Both judges see the same draws: interval k of run r of a cell uses the seed (seed, cell, r, k)
for either judge, so they differ only where their rollouts took different paths.

Policies (README's example): steps 10% -> pause 30s -> 50% -> pause 30s -> 100%, interval 30s,
minSamples 50, failureLimit 2, bake 5m. Each scenario judges only the check it is about:
- errors:  fixed errorRate {max: 0.01}   vs  new errorRate {} (maxRatio 1.5, alpha 0.01)
- latency: fixed latencyP99 {maxMs: 200} vs  new latencyP99 {} (maxRatio 2)
- drift:   fixed predictionDrift {maxPSI: 0.2} vs new predictionDrift {} (maxPSI 0.2)
A rollout still undecided after 2 hours of simulated time is Held.

Reported per cell and judge: rolled back before promotion, rolled back in the bake, promoted
(bake completed), held; the median canary requests and time (from the spec change) to a
rollback, over the rolled-back runs. Then a PASS/MISS line per acceptance goal of issue #15.

    make bench-judgement   # or: .venv/bin/python -m tests.bench.bench_judgement --runs 200
    .venv/bin/python -m tests.bench.bench_judgement --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from canarium.analysis import MeasuredWindow, RevisionMetrics, WindowResult
from canarium.api import RolloutPolicySpec
from canarium.replay import START, ReplayResult, judged_by, replay
from canarium_serving.metrics import LATENCY_BUCKETS

from tests.bench.fixed_threshold_judge import fixed_threshold_judge

Kind = Literal["errors", "latency", "drift"]
Expect = Literal["equal", "within", "edge", "worse"]

INTERVAL_S = 30.0
CAP_S = 2 * 3600.0
SLOW_BELOW_RPS = 20.0
"""Cells with less traffic never pass a 10% step (minSamples 50 per 30 s): their rollouts run
to the cap unless rolled back, about 12x the cost of the others, so they get fewer runs."""
RATES = (1.0, 5.0, 20.0, 100.0, 1000.0)  # total req/s, both revisions
BASE_ERRORS = (0.001, 0.005, 0.01, 0.02)
ERROR_FACTORS: tuple[tuple[float, Expect], ...] = (
    (1.0, "equal"),
    (1.2, "within"),  # the default tolerance is maxRatio 1.5
    (1.5, "edge"),  # at the tolerance: either outcome is right
    (3.0, "worse"),
    (10.0, "worse"),
)
LATENCY_MEDIAN_S = 0.05  # stable: lognormal, median 50 ms, sigma 0.5 -> p99 ~160 ms
LATENCY_SIGMA = 0.5
LATENCY_SHIFTS: tuple[tuple[float, Expect], ...] = (
    (1.0, "equal"),
    (1.1, "within"),  # slow share (over stable's p99 bound, 200 ms) 1.8x stable's: within 2
    (1.5, "worse"),  # +50% median: p99 ~240 ms, slow share ~9x stable's
)
STABLE_CLASSES = (0.5, 0.3, 0.2)
CLASS_SHIFTS: tuple[tuple[tuple[float, float, float], Expect], ...] = (
    (STABLE_CLASSES, "equal"),
    ((0.4, 0.3, 0.3), "within"),  # PSI 0.063
    ((0.25, 0.25, 0.5), "worse"),  # PSI 0.457
)
DRIFT_ERROR_RATE = 0.005  # errors in the latency and drift scenarios (not judged there)

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
    {"setWeight": 100},
]
FIXED_CHECKS: dict[Kind, dict[str, Any]] = {
    "errors": {"errorRate": {"max": 0.01}},
    "latency": {"latencyP99": {"maxMs": 200}},
    "drift": {"predictionDrift": {"maxPSI": 0.2}},
}
NEW_CHECKS: dict[Kind, dict[str, Any]] = {
    "errors": {"errorRate": {}},
    "latency": {"latencyP99": {}},
    "drift": {"predictionDrift": {}},
}
JUDGES = ("new", "fixed")
DEFAULT_RUNS = 200
DEFAULT_SLOW_RUNS = 20


def policy(checks: dict[str, Any]) -> RolloutPolicySpec:
    return RolloutPolicySpec.model_validate(
        {
            "steps": STEPS,
            "analysis": {
                "interval": f"{INTERVAL_S:g}s",
                "failureLimit": 2,
                "minSamples": 50,
                "checks": checks,
            },
            "bake": "5m",
        }
    )


# --- the cells ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    kind: Kind
    rps: float
    expect: Expect
    label: str
    stable_error: float
    canary_error: float
    canary_latency_median_s: float = LATENCY_MEDIAN_S
    canary_classes: tuple[float, ...] = STABLE_CLASSES
    base_error: float = 0.0  # the grid's baseline rate (errors scenarios)
    factor: float = 1.0  # canary error rate / stable's (errors scenarios)


def _pct(rate: float) -> str:
    return f"{100 * rate:.4g}%"


def grid(quick: bool = False) -> list[Cell]:
    rates = (20.0, 1000.0) if quick else RATES
    bases = (0.005,) if quick else BASE_ERRORS
    factors = [f for f in ERROR_FACTORS if not quick or f[0] in (1.0, 10.0)]
    cells = []
    for base in bases:
        for factor, expect in factors:
            label = f"errors {_pct(base)} x{factor:g}"
            for rps in rates:
                cells.append(
                    Cell(
                        "errors",
                        rps,
                        expect,
                        label,
                        base,
                        base * factor,
                        base_error=base,
                        factor=factor,
                    )
                )
    for shift, expect in LATENCY_SHIFTS if not quick else LATENCY_SHIFTS[::2]:
        for rps in rates:
            cells.append(
                Cell(
                    "latency",
                    rps,
                    expect,
                    f"latency median x{shift:g}",
                    DRIFT_ERROR_RATE,
                    DRIFT_ERROR_RATE,
                    canary_latency_median_s=LATENCY_MEDIAN_S * shift,
                )
            )
    for shares, expect in CLASS_SHIFTS if not quick else CLASS_SHIFTS[::2]:
        value = psi_of(STABLE_CLASSES, shares)
        for rps in rates:
            cells.append(
                Cell(
                    "drift",
                    rps,
                    expect,
                    f"classes PSI {value:.2f}",
                    DRIFT_ERROR_RATE,
                    DRIFT_ERROR_RATE,
                    canary_classes=shares,
                )
            )
    return cells


def psi_of(expected: Sequence[float], actual: Sequence[float]) -> float:
    return sum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))


# --- the simulation -----------------------------------------------------------------------


def latency_probabilities(median_s: float, sigma: float = LATENCY_SIGMA) -> np.ndarray:
    """Each latency bucket's probability (the finite ones, then +Inf) of a lognormal."""

    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf(math.log(x / median_s) / (sigma * math.sqrt(2.0))))

    cumulative = [cdf(le) for le in LATENCY_BUCKETS] + [1.0]
    probs = np.diff(np.array([0.0, *cumulative]))
    out: np.ndarray = np.clip(probs, 0.0, None) / probs.sum()
    return out


@dataclass(frozen=True)
class _Revision:
    error: float
    latency: np.ndarray | None  # bucket probabilities, or None: no latency histogram
    classes: np.ndarray | None  # class shares, or None: no predictions


def _metrics(rng: np.random.Generator, n: int, rev: _Revision) -> RevisionMetrics:
    errors = int(rng.binomial(n, rev.error)) if n > 0 else 0
    latency: dict[float, float] = {}
    if rev.latency is not None:
        counts = rng.multinomial(n, rev.latency)
        cumulative = np.cumsum(counts)
        latency = {le: float(c) for le, c in zip(LATENCY_BUCKETS, cumulative[:-1], strict=True)}
        latency[math.inf] = float(n)
    classes: dict[tuple[str, str], float] = {}
    if rev.classes is not None:
        counts = rng.multinomial(n - errors, rev.classes)
        classes = {("label", f"class{i}"): float(c) for i, c in enumerate(counts)}
    return RevisionMetrics(
        requests=float(n),
        errors=float(errors),
        latency_buckets=latency,
        prediction_classes=classes,
    )


class SimulatedTraffic:
    """The windows of one simulated rollout (a `canarium.replay.WindowSource`): interval k is
    drawn from the seed (seed, cell, run, k), so two judges of the same run see the same
    traffic wherever their rollouts stand at the same weight."""

    def __init__(self, cell: Cell, seed: Sequence[int], cap_s: float = CAP_S):
        self.cell = cell
        self.seed = list(seed)
        self.cap_s = cap_s
        self.looks = 0
        self.last: datetime | None = None
        latency = cell.kind == "latency"
        drift = cell.kind == "drift"
        self.stable = _Revision(
            cell.stable_error,
            latency_probabilities(LATENCY_MEDIAN_S) if latency else None,
            np.array(STABLE_CLASSES) if drift else None,
        )
        self.canary = _Revision(
            cell.canary_error,
            latency_probabilities(cell.canary_latency_median_s) if latency else None,
            np.array(cell.canary_classes) if drift else None,
        )

    def __call__(self, now: datetime, weight: float, baseline: bool) -> MeasuredWindow | None:
        if (now - START).total_seconds() >= self.cap_s:
            return None
        last, self.last = self.last, now
        if baseline or last is None:
            return MeasuredWindow(now, None)
        self.looks += 1
        rng = np.random.default_rng([*self.seed, self.looks])
        seconds = (now - last).total_seconds()
        total = int(rng.poisson(self.cell.rps * seconds))
        share = min(max(weight / 100.0, 0.0), 1.0)
        n_canary = int(rng.binomial(total, share))
        canary = _metrics(rng, n_canary, self.canary)
        stable = _metrics(rng, total - n_canary, self.stable) if share < 1.0 else None
        return MeasuredWindow(now, WindowResult(canary, stable))


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    outcome: str  # Promoted, RolledBack (before promotion), RolledBackInBake, Held, Paused
    seconds: float
    canary_requests: float


def summarise(result: ReplayResult) -> Run:
    outcome: str = result.outcome
    if outcome == "RolledBack" and any(e.reason == "Promoted" for e in result.events):
        outcome = "RolledBackInBake"
    return Run(outcome, result.seconds, result.canary_requests)


def one_rollout(cell: Cell, judge: str, seed: Sequence[int], cap_s: float = CAP_S) -> Run:
    source = SimulatedTraffic(cell, seed, cap_s)
    if judge == "new":
        return summarise(replay(_policy(cell.kind, judge), source))
    return summarise(
        replay(_policy(cell.kind, judge), source, judge=judged_by(fixed_threshold_judge))
    )


@functools.cache
def _policy(kind: Kind, judge: str) -> RolloutPolicySpec:
    return policy((NEW_CHECKS if judge == "new" else FIXED_CHECKS)[kind])


@dataclass
class Stats:
    runs: int
    rolled_back: float  # before promotion
    rolled_back_in_bake: float
    promoted: float
    held: float
    median_requests: float | None  # to a rollback (any), over the rolled-back runs
    median_seconds: float | None

    @property
    def any_rollback(self) -> float:
        return self.rolled_back + self.rolled_back_in_bake


def stats(runs: Sequence[Run]) -> Stats:
    n = len(runs)

    def share(*outcomes: str) -> float:
        return sum(r.outcome in outcomes for r in runs) / n if n else math.nan

    back = [r for r in runs if r.outcome in ("RolledBack", "RolledBackInBake")]
    return Stats(
        runs=n,
        rolled_back=share("RolledBack"),
        rolled_back_in_bake=share("RolledBackInBake"),
        promoted=share("Promoted"),
        held=share("Held", "Paused"),
        median_requests=statistics.median(r.canary_requests for r in back) if back else None,
        median_seconds=statistics.median(r.seconds for r in back) if back else None,
    )


@dataclass
class CellResult:
    cell: Cell
    judges: dict[str, Stats] = field(default_factory=dict)


def run_grid(
    cells: Sequence[Cell],
    runs: Callable[[Cell], int],
    seed: int,
    workers: int,
    cap_s: float = CAP_S,
    progress: Callable[[int, int], None] | None = None,
) -> list[CellResult]:
    # Blocks of runs keep the workers busy: small ones for slow cells (rollouts held up to
    # the cap), larger for quick ones. Seeds are per (cell, run): a block knows its first run.
    jobs = []
    for i, cell in enumerate(cells):
        n = runs(cell)
        block = 5 if cell.rps < SLOW_BELOW_RPS else 50
        jobs += [
            (i, cell, seed, min(block, n - first), cap_s, first) for first in range(0, n, block)
        ]
    collected: dict[int, dict[str, list[Run]]] = {
        i: {j: [] for j in JUDGES} for i in range(len(cells))
    }
    done = 0
    if workers <= 1:
        results: Iterable[tuple[int, dict[str, list[Run]]]] = map(_work_block, jobs)
        for index, out in results:
            _merge(collected[index], out)
            done += 1
            if progress:
                progress(done, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            # Slow cells (low traffic: held for the whole cap) first.
            order = sorted(range(len(jobs)), key=lambda k: jobs[k][1].rps)
            for index, out in pool.map(_work_block, [jobs[k] for k in order], chunksize=1):
                _merge(collected[index], out)
                done += 1
                if progress:
                    progress(done, len(jobs))
    return [
        CellResult(cell, {j: stats(collected[i][j]) for j in JUDGES})
        for i, cell in enumerate(cells)
    ]


def _work_block(
    job: tuple[int, Cell, int, int, float, int],
) -> tuple[int, dict[str, list[Run]]]:
    index, cell, seed, runs, cap_s, first = job
    return index, {
        judge: [one_rollout(cell, judge, (seed, index, first + r), cap_s) for r in range(runs)]
        for judge in JUDGES
    }


def _merge(into: dict[str, list[Run]], part: dict[str, list[Run]]) -> None:
    for judge, runs in part.items():
        into[judge].extend(runs)


# --- goals --------------------------------------------------------------------------------


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95%)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Goal:
    name: str
    text: str
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)


def _goal(
    name: str,
    text: str,
    results: Sequence[CellResult],
    pick: Callable[[Cell], bool],
    value: Callable[[Stats], float],
    at_most: float | None = None,
    at_least: float | None = None,
) -> Goal:
    goal = Goal(name, text)
    chosen = [r for r in results if pick(r.cell)]
    for judge in JUDGES:
        if not chosen:
            goal.judges[judge] = {"verdict": "n/a", "cells": 0}
            continue
        values = [(value(r.judges[judge]), r) for r in chosen]
        if at_most is not None:
            worst, cell = max(values, key=lambda v: v[0])
            ok = all(v <= at_most for v, _ in values)
        else:
            assert at_least is not None
            worst, cell = min(values, key=lambda v: v[0])
            ok = all(v >= at_least for v, _ in values)
        n = cell.judges[judge].runs
        low, high = wilson(worst * n, n)
        goal.judges[judge] = {
            "verdict": "PASS" if ok else "MISS",
            "cells": len(chosen),
            "worst": worst,
            "worst_cell": f"{cell.cell.label} at {cell.cell.rps:g} req/s",
            "worst_ci95": [low, high],
            "failing_cells": [
                f"{r.cell.label} at {r.cell.rps:g} req/s ({100 * v:.1f}%)"
                for v, r in values
                if (at_most is not None and v > at_most) or (at_least is not None and v < at_least)
            ],
        }
    return goal


def goals(results: Sequence[CellResult]) -> list[Goal]:
    return [
        _goal(
            "a",
            "canary equal to stable: false rollback <= 1% in every cell",
            results,
            lambda c: c.expect == "equal",
            lambda s: s.any_rollback,
            at_most=0.01,
        ),
        _goal(
            "b1",
            "10x worse (0.5% -> 5%) at >= 5 req/s: rolled back before promotion >= 99%",
            results,
            lambda c: (
                c.kind == "errors" and c.base_error == 0.005 and c.factor == 10 and c.rps >= 5
            ),
            lambda s: s.rolled_back,
            at_least=0.99,
        ),
        _goal(
            "b2",
            "3x worse than 1% at >= 20 req/s: rolled back before promotion >= 95%",
            results,
            lambda c: c.kind == "errors" and c.base_error == 0.01 and c.factor == 3 and c.rps >= 20,
            lambda s: s.rolled_back,
            at_least=0.95,
        ),
        _goal(
            "c",
            "within tolerance (1.2x errors) at >= 20 req/s: promoted >= 95%",
            results,
            lambda c: c.kind == "errors" and c.factor == 1.2 and c.rps >= 20,
            lambda s: s.promoted,
            at_least=0.95,
        ),
    ]


# --- output -------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value < 1e5 else f"{value:.3g}"


def _share(value: float) -> str:
    return f"{100 * value:.0f}" if value in (0.0, 1.0) else f"{100 * value:.1f}"


def table(results: Sequence[CellResult]) -> str:
    head = f"{'scenario':<22} {'req/s':>5} {'expect':<6} | " + " | ".join(
        f"{j + ': rb%':>10} {'bake%':>5} {'prom%':>5} {'held%':>5} {'req':>7} {'time':>6}"
        for j in JUDGES
    )
    lines = [head, "-" * len(head)]
    previous = ""
    for r in results:
        label = r.cell.label if r.cell.label != previous else ""
        previous = r.cell.label
        parts = []
        for j in JUDGES:
            s = r.judges[j]
            parts.append(
                f"{_share(s.rolled_back):>10} {_share(s.rolled_back_in_bake):>5} "
                f"{_share(s.promoted):>5} {_share(s.held):>5} "
                f"{_count(s.median_requests):>7} {_duration(s.median_seconds):>6}"
            )
        lines.append(f"{label:<22} {r.cell.rps:>5g} {r.cell.expect:<6} | " + " | ".join(parts))
    return "\n".join(lines)


def goal_lines(found: Sequence[Goal]) -> list[str]:
    lines = []
    for goal in found:
        parts = []
        for j in JUDGES:
            g = goal.judges[j]
            if g["verdict"] == "n/a":
                parts.append(f"{j}: n/a (no cells)")
                continue
            low, high = g["worst_ci95"]
            parts.append(
                f"{j}: {g['verdict']} (worst {100 * g['worst']:.1f}% at {g['worst_cell']}, "
                f"95% CI {100 * low:.1f}-{100 * high:.1f}%)"
            )
        lines.append(f"goal ({goal.name}) {goal.text}\n    " + "\n    ".join(parts))
    return lines


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help="rollouts per cell and judge"
    )
    parser.add_argument(
        "--slow-runs",
        type=int,
        default=DEFAULT_SLOW_RUNS,
        help=f"rollouts per cell and judge below {SLOW_BELOW_RPS:g} req/s (they run to the cap)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few cells, 5 runs")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--cap-hours", type=float, default=CAP_S / 3600)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else args.runs
    slow_runs = 5 if args.quick else args.slow_runs
    cells = grid(quick=args.quick)
    cap_s = args.cap_hours * 3600

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} blocks", end="\n" if done == total else "", file=sys.stderr)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} blocks", file=sys.stderr)

    began = time.monotonic()
    results = run_grid(
        cells,
        lambda cell: runs if cell.rps >= SLOW_BELOW_RPS else slow_runs,
        args.seed,
        args.workers,
        cap_s,
        progress,
    )
    elapsed = time.monotonic() - began
    found = goals(results)
    print(
        f"{runs} simulated rollouts per cell and judge ({slow_runs} below "
        f"{SLOW_BELOW_RPS:g} req/s), seed {args.seed}, cap "
        f"{_duration(cap_s)}, {elapsed:.0f}s on {args.workers} workers.\n"
        "rb% rolled back before promotion, bake% rolled back in the bake, prom% promoted "
        "(bake completed), held% undecided at the cap;\nreq/time: median canary requests and "
        "time from the spec change to a rollback, over the rolled-back runs.\n"
    )
    print(table(results))
    print()
    for line in goal_lines(found):
        print(line)
    if args.json:
        payload = {
            "runs": runs,
            "slow_runs": slow_runs,
            "seed": args.seed,
            "cap_seconds": cap_s,
            "elapsed_seconds": round(elapsed, 1),
            "workers": args.workers,
            "cells": [
                {
                    **asdict(r.cell),
                    "judges": {
                        j: {**asdict(s), "any_rollback": s.any_rollback}
                        for j, s in r.judges.items()
                    },
                }
                for r in results
            ],
            "goals": [asdict(g) for g in found],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
