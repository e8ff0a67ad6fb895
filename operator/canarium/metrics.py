"""The operator's own Prometheus metrics."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LEADER = Gauge(
    "canarium_leader", "1 while this replica holds the leader Lease and reconciles, else 0."
)
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

# The work queue, as client-go's workqueue metrics (workqueue_depth, _adds_total,
# _queue_duration_seconds): how long a key waits for a worker says whether the operator or the
# API server is what a rollout waits on.
QUEUE_DEPTH = Gauge("canarium_workqueue_depth", "Keys waiting for a worker, by queue.", ["name"])
QUEUE_ADDS = Counter("canarium_workqueue_adds_total", "Keys queued, by queue.", ["name"])
QUEUE_SECONDS = Histogram(
    "canarium_workqueue_queue_duration_seconds",
    "Time a key waits in the queue before a worker takes it, by queue.",
    ["name"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

EVENTS_DROPPED = Counter(
    "canarium_events_dropped_total",
    "Kubernetes Events not posted because too many waited to be (the recorder's queue was full).",
)
ROLLBACKS = Counter(
    "canarium_rollbacks_total",
    "Canaries rolled back by analysis, a progress deadline or a person, by ModelDeployment.",
    ["namespace", "modeldeployment", "reason"],
)
ANALYSIS_RUNS = Counter(
    "canarium_analysis_runs_total",
    "Analysis intervals judged, by verdict.",
    ["namespace", "modeldeployment", "verdict"],
)

RETRAINING_RUNS = Counter(
    "canarium_retraining_runs_total",
    "Retraining runs by trigger and by what became of them (Failed, Rejected, Promoted, "
    "RolledBack, Superseded, Discarded), counted when they reach it.",
    ["namespace", "modelretraining", "trigger", "phase"],
)
RETRAINING_ENDS = frozenset(
    {"Failed", "Rejected", "Promoted", "RolledBack", "Superseded", "Discarded"}
)

PHASES = ("Pending", "Progressing", "Paused", "Healthy", "Degraded")
_phases: dict[tuple[str, str], str] = {}
_statuses: dict[tuple[str, str], dict[str, Any]] = {}


def observe_phase(key: tuple[str, str], phase: str | None) -> None:
    if phase:
        _phases[key] = phase


def observe_status(key: tuple[str, str], status: dict[str, Any]) -> None:
    """Keep the latest status for the per-ModelDeployment gauges (read at scrape time)."""
    observe_phase(key, status.get("phase"))
    _statuses[key] = status


def forget(key: tuple[str, str]) -> None:
    _phases.pop(key, None)
    _statuses.pop(key, None)


_retrainings: dict[tuple[str, str], dict[str, Any]] = {}


def observe_retraining(
    key: tuple[str, str], old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    """A ModelRetraining's status went from `old` to `new` (None: deleted): count the runs that
    ended, keep the new status for the gauges."""
    if new is None:
        _retrainings.pop(key, None)
        return
    before = {run.get("name"): run.get("phase") for run in (old or {}).get("runs") or []}
    for run in new.get("runs") or []:
        phase = run.get("phase")
        if phase in RETRAINING_ENDS and before.get(run.get("name")) != phase:
            RETRAINING_RUNS.labels(*key, run.get("trigger", ""), phase).inc()
    _retrainings[key] = new


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


class _RolloutCollector(Collector):
    """Per-ModelDeployment rollout gauges, built at scrape time from the latest statuses:
    phase, asked and effective weights, current step, and the latest analysis measurements."""

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "modeldeployment"]
        phase = GaugeMetricFamily(
            "canarium_rollout_phase", "1 for the ModelDeployment's current phase.",
            labels=[*labels, "phase"],
        )  # fmt: skip
        weight = GaugeMetricFamily(
            "canarium_rollout_weight_percent",
            "Traffic percentage per revision role: asked (weight) and delivered (effective).",
            labels=[*labels, "role", "revision", "kind"],
        )
        step = GaugeMetricFamily(
            "canarium_rollout_step", "Index of the current rollout step (0-based).", labels=labels
        )
        measurement = GaugeMetricFamily(
            "canarium_analysis_measurement",
            "Latest value of each analysis check.",
            labels=[*labels, "check", "verdict"],
        )
        drifted = GaugeMetricFamily(
            "canarium_model_drifted",
            "1 while the stable revision is Drifted (spec.monitoring), else 0.",
            labels=labels,
        )
        drift_psi = GaugeMetricFamily(
            "canarium_model_drift_psi",
            "PSI of each input feature and output in the last monitoring window, and the "
            "highest PSI maxPSI allows at its sample size (bound).",
            labels=[*labels, "kind", "name", "value"],
        )
        for (namespace, name), status in list(_statuses.items()):
            base = [namespace, name]
            for p in PHASES:
                phase.add_metric([*base, p], 1.0 if status.get("phase") == p else 0.0)
            for role in ("stable", "canary"):
                rev = status.get(role)
                if rev:
                    revision = str(rev.get("name", ""))
                    weight.add_metric([*base, role, revision, "asked"], rev.get("weight") or 0)
                    weight.add_metric(
                        [*base, role, revision, "effective"], rev.get("effectiveWeight") or 0
                    )
            if status.get("currentStep") is not None:
                step.add_metric(base, status["currentStep"])
            for m in (status.get("analysis") or {}).get("measurements", []):
                if m.get("value") is not None:
                    measurement.add_metric([*base, m["check"], m["verdict"]], m["value"])
            for c in status.get("conditions", []):
                if c.get("type") == "Drifted" and c.get("status") in ("True", "False"):
                    drifted.add_metric(base, 1.0 if c["status"] == "True" else 0.0)
            for f in (status.get("monitoring") or {}).get("findings", []):
                drift_psi.add_metric([*base, f["kind"], f["name"], "psi"], f["psi"])
                drift_psi.add_metric([*base, f["kind"], f["name"], "bound"], f["allowed"])
        yield from (phase, weight, step, measurement, drifted, drift_psi)


class _RetrainingCollector(Collector):
    """Per-ModelRetraining gauges from the latest statuses."""

    def collect(self) -> Iterator[Metric]:
        failures = GaugeMetricFamily(
            "canarium_retraining_consecutive_failures",
            "Runs in a row that failed, were rejected or rolled back (0 after a promotion).",
            labels=["namespace", "modelretraining"],
        )
        for (namespace, name), status in list(_retrainings.items()):
            failures.add_metric([namespace, name], status.get("consecutiveFailures") or 0)
        yield failures


REGISTRY.register(_PhaseCollector())
REGISTRY.register(_RetrainingCollector())
REGISTRY.register(_RolloutCollector())
