"""The operator's own Prometheus metrics."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RECONCILE_TOTAL = Counter("canarium_reconcile_total", "Reconciles carried out, by kind.", ["kind"])
RECONCILE_ERRORS = Counter(
    "canarium_reconcile_errors_total", "Reconciles that failed and were retried, by kind.", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "canarium_reconcile_duration_seconds",
    "Time to reconcile one object, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

PHASES = ("Pending", "Progressing", "Paused", "Healthy", "Degraded")
_phases: dict[tuple[str, str], str] = {}


def observe_phase(key: tuple[str, str], phase: str | None) -> None:
    if phase:
        _phases[key] = phase


def forget(key: tuple[str, str]) -> None:
    _phases.pop(key, None)


class _PhaseCollector(Collector):
    """ModelDeployments by phase, counted at scrape time (no work per reconcile)."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "canarium_modeldeployments", "ModelDeployments by phase.", labels=["phase"]
        )
        counts = Tally(_phases.values())
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family


REGISTRY.register(_PhaseCollector())
