"""Replay: run the real state machine and judge (`reconcile`) over analysis windows from a
recording, or from a simulation, on a cluster that exists only in memory. Pure.

A ModelDeployment serves version "stable" under the policy; its spec then asks for "canary".
Its Deployments are always fully ready; the clock jumps to whatever comes next: the time the
plan asks to look again, or the next window. Whenever the state machine says an analysis
interval is due, the source gives the window (a recording: its next window, and the clock moves
to the time it was measured; a simulation: counts drawn for the canary's current weight). The
replay ends when the canary is promoted (and its bake is over), rolled back, paused for a
person, or the windows run out (held).

    result = replay(policy, RecordingSource(recording))
    result.outcome, result.interval  # "RolledBack", 7
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from canarium.analysis import MeasuredWindow, WindowResult
from canarium.analysis.recording import Recording, record_to_window
from canarium.api import Measurement, ModelDeployment, RolloutPolicySpec, Verdict
from canarium.reconcile import Plan, ReconcileInput, observe_deployment, reconcile, rollout_input
from canarium.rollout import AnalysisRun, Event, analysis_due
from canarium.settings import Settings

Outcome = Literal["Promoted", "RolledBack", "Paused", "Held"]
START = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "replay"
MAX_RECONCILES = 100_000


class WindowSource(Protocol):
    """Where windows come from: None when there are no more."""

    def __call__(self, now: datetime, weight: float, baseline: bool) -> MeasuredWindow | None: ...


class RecordingSource:
    """A recording's windows in order. A baseline the state machine asks for where the
    recording has counts is made up (the counts are kept for the next interval); a recorded
    baseline where it asks for counts is skipped. A step's new pods are ready once the
    recording shows them ready (until then the real rollout was waiting for them)."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self._records = list(recording.windows)
        self._next = 0
        self._held: MeasuredWindow | None = None

    def _take(self) -> MeasuredWindow | None:
        if self._next >= len(self._records):
            return None
        self._next += 1
        return record_to_window(self._records[self._next - 1])

    def __call__(self, now: datetime, weight: float, baseline: bool) -> MeasuredWindow | None:
        window = self._held or self._take()
        self._held = None
        while window is not None and window.result is None and not baseline:
            window = self._take()
        if window is None:
            return None
        if baseline and window.result is not None:
            self._held = window
            return MeasuredWindow(max(now, window.time), None)
        return window

    def ready(self, weight: float) -> bool:
        """Whether the canary's pods for `weight` were all ready by the next recorded window
        (when it does not say, they were)."""
        upcoming = self._records[self._next - (self._held is not None) :]
        record = next((r for r in upcoming if r.weight is not None), None)
        if record is None or record.weight is None:
            return True
        if record.weight != weight:
            return record.weight > weight
        if record.canary_replicas is None or record.canary_ready is None:
            return True
        return record.canary_ready >= record.canary_replicas


@dataclass(frozen=True)
class ReplayedInterval:
    """One judged interval."""

    index: int  # 1-based, judged intervals only
    time: datetime
    weight: float  # the canary's share of the traffic (percent) while it was measured
    verdict: Verdict
    measurements: list[Measurement]
    phase: str  # the phase after it


@dataclass
class ReplayResult:
    outcome: Outcome
    reason: str
    interval: int | None = None  # the judged interval at which it ended (None: none)
    seconds: float = 0.0  # from the start of the rollout to its end
    canary_requests: float = 0.0  # judged canary requests up to the end
    intervals: list[ReplayedInterval] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        """As `canarium policy replay -o json` prints it."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "interval": self.interval,
            "seconds": self.seconds,
            "canaryRequests": self.canary_requests,
            "intervals": [
                {
                    "index": i.index,
                    "time": i.time.isoformat(),
                    "weight": i.weight,
                    "verdict": i.verdict,
                    "phase": i.phase,
                    "checks": [
                        m.model_dump(
                            by_alias=True, mode="json", exclude_none=True, exclude={"time"}
                        )
                        for m in i.measurements
                    ],
                }
                for i in self.intervals
            ],
            "events": [
                {"type": e.type, "reason": e.reason, "message": e.message} for e in self.events
            ],
        }


Judge = Callable[[ReconcileInput], ReconcileInput]
"""A replacement for the judge (benchmarks compare judges): turns an input with a measured
window into one with a judged run. None: the operator's own (`reconcile` judges)."""


class _Cluster:
    """The ModelDeployment and its Deployments, always ready."""

    def __init__(self, policy: RolloutPolicySpec, replicas: int):
        self.policy = policy
        self.replicas = replicas
        self.version = "stable"
        self.generation = 1
        self.status: dict[str, Any] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.ready: dict[str, int] = {}  # ready pods by Deployment (new pods may lag)

    def mdep(self) -> ModelDeployment:
        return ModelDeployment.model_validate(
            {
                "apiVersion": "canarium.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {
                    "name": NAME,
                    "namespace": NAME,
                    "uid": NAME,
                    "generation": self.generation,
                },
                "spec": {
                    "model": {
                        "uri": f"file:///models/{self.version}.onnx",
                        "version": self.version,
                    },
                    "serving": {"replicas": self.replicas},
                    "rollout": {"policyRef": {"name": NAME}},
                },
                "status": self.status,
            }
        )

    def input(self, now: datetime, window: MeasuredWindow | None = None) -> ReconcileInput:
        revisions = {}
        for name, dep in self.deployments.items():
            replicas = dep["spec"].get("replicas", 1)
            body = {
                **dep,
                "metadata": {**dep["metadata"], "generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "readyReplicas": min(self.ready.get(name, replicas), replicas),
                    "updatedReplicas": replicas,
                },
            }
            revisions[name] = observe_deployment(body)
        return ReconcileInput(
            mdep=self.mdep(),
            revisions=revisions,
            now=now,
            settings=Settings(serving_image="replay"),
            policy=self.policy,
            analysis_window=window,
        )

    def apply(self, plan: Plan, canary_ready: bool) -> bool:
        """Carry out a plan; whether the Deployments changed. New pods of the canary (the
        Deployment of the spec's version) are ready at once unless `canary_ready` says no."""
        before = {n: d["spec"].get("replicas") for n, d in self.deployments.items()}
        for manifest in plan.apply:
            if manifest["kind"] == "Deployment":
                name = manifest["metadata"]["name"]
                self.deployments[name] = manifest
                version = manifest["metadata"]["annotations"].get("canarium.dev/model-version")
                if canary_ready or version != self.version:
                    self.ready.pop(name, None)
                else:
                    self.ready.setdefault(name, before.get(name) or 0)
        for ref in plan.delete:
            if ref.kind == "Deployment":
                self.deployments.pop(ref.name, None)
                self.ready.pop(ref.name, None)
        self.status = plan.status
        return before != {n: d["spec"].get("replicas") for n, d in self.deployments.items()}

    def catch_up(self) -> bool:
        """The lagging pods get ready; whether any did."""
        lagging = bool(self.ready)
        self.ready.clear()
        return lagging


def ready(source: WindowSource, status: dict[str, Any]) -> bool:
    """Whether the canary's pods for its current weight are ready (always, unless the source
    knows better: a recording)."""
    canary = status.get("canary") or {}
    known = getattr(source, "ready", None)
    if known is None or not canary:
        return True
    return bool(known(float(canary.get("weight") or 0)))


def _weight(status: dict[str, Any]) -> float:
    canary = status.get("canary") or {}
    if canary:
        return float(canary.get("effectiveWeight", canary.get("weight", 0)) or 0)
    return 100.0  # the bake: the promoted revision takes everything


def _ended(status: dict[str, Any], canary: str) -> tuple[Outcome, str] | None:
    history = status.get("history") or []
    latest = history[0] if history else {}
    if latest.get("revision") == canary and latest.get("outcome") in ("RolledBack", "Aborted"):
        return "RolledBack", str(latest.get("reason", ""))
    if status.get("phase") == "Degraded":
        return "RolledBack", str(status.get("message", ""))
    stable = (status.get("stable") or {}).get("name")
    if stable == canary and not status.get("previous"):
        return "Promoted", str(status.get("message", ""))
    if status.get("phase") == "Paused":
        return "Paused", str(status.get("pauseReason") or status.get("message", ""))
    return None


def _interval(
    cluster: _Cluster,
    source: WindowSource,
    now: datetime,
    judge: Judge | None,
    result: ReplayResult,
) -> tuple[Plan, datetime] | None:
    """The reconcile of a due analysis interval with the source's window (and the time it was
    measured); None when the windows ran out."""
    analysis = cluster.mdep().status.analysis
    baseline = analysis is None or analysis.last_run_time is None
    weight = _weight(cluster.status)
    window = source(now, weight, baseline)
    if window is None:
        return None
    now = max(now, window.time)
    inp = cluster.input(now, replace(window, time=now))
    if judge is not None and window.result is not None:
        inp = judge(inp)
    plan = reconcile(inp)
    run = plan.status.get("analysis") or {}
    if window.result is not None and run.get("lastVerdict"):
        if window.result.canary is not None:
            result.canary_requests += window.result.canary.requests
        result.intervals.append(
            ReplayedInterval(
                len(result.intervals) + 1,
                now,
                weight,
                run["lastVerdict"],
                [Measurement.model_validate(m) for m in run["measurements"]],
                str(plan.status.get("phase")),
            )
        )
    return plan, now


def replay(
    policy: RolloutPolicySpec,
    source: WindowSource,
    *,
    replicas: int = 10,
    judge: Judge | None = None,
    start: datetime = START,
) -> ReplayResult:
    """Roll a new version out under `policy`, judged on the windows `source` gives."""
    if policy.analysis is None:
        raise ValueError("the policy has no analysis: there is nothing to replay")
    if isinstance(source, RecordingSource) and source.recording.replicas:
        replicas = source.recording.replicas
    cluster = _Cluster(policy, replicas)
    now = start
    for _ in range(3):
        cluster.apply(reconcile(cluster.input(now)), canary_ready=True)
    cluster.version, cluster.generation = "canary", 2
    result = ReplayResult("Held", "the windows ran out")
    canary = ""
    exhausted = False
    for _ in range(MAX_RECONCILES):
        if cluster.ready and ready(source, cluster.status):
            cluster.catch_up()
        inp = cluster.input(now)
        canary = canary or rollout_input(inp).desired
        measured = None
        if not exhausted and analysis_due(rollout_input(inp)):
            measured = _interval(cluster, source, now, judge, result)
            exhausted = measured is None
        if measured is not None:
            plan, now = measured
        else:
            # Without more windows the rollout can still end: pods get ready, a promotion.
            plan = reconcile(inp)
        changed = cluster.apply(plan, ready(source, plan.status))
        result.events.extend(plan.events)
        ended = _ended(cluster.status, canary)
        if ended is not None:
            result.outcome, result.reason = ended
            result.interval = len(result.intervals) or None
            break
        if exhausted and not changed:
            break
        if not changed:
            wait = plan.requeue_after
            if wait is None or wait <= 0:
                wait = policy.analysis.interval_seconds
            now += timedelta(seconds=wait)
    result.seconds = (now - start).total_seconds()
    return result


def judged_by(
    judge_fn: Callable[..., Any],
) -> Judge:
    """A `Judge` from a function with `canarium.analysis.judge`'s signature (analysis,
    canary, stable, now, custom, no_data, evidence) returning a Judgement."""

    def apply(inp: ReconcileInput) -> ReconcileInput:
        window = inp.analysis_window
        analysis = inp.policy.analysis if inp.policy else None
        if window is None or window.result is None or analysis is None:
            return inp
        status = inp.mdep.status
        evidence = status.analysis.evidence if status.analysis else []
        result: WindowResult = window.result
        judgement = judge_fn(
            analysis,
            result.canary,
            result.stable,
            window.time,
            window.custom,
            window.no_data,
            evidence,
        )
        return replace(inp, analysis_window=None, analysis_run=AnalysisRun(window.time, judgement))

    return apply
