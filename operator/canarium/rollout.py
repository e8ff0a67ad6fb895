"""The rollout state machine. Pure: (spec, policy, status, observed revisions, analysis, now,
commands) -> a Decision (which revisions serve with how many pods, the traffic weight, the new
status, events, when to look again).

A change of the model or serving spec makes a new revision, the canary. The policy's steps move
traffic to it (`setWeight`), wait (`pause: {duration}`) or wait for a person (`pause: {}`);
analysis judges the canary at every interval while it takes traffic and during the bake after
promotion. Inconclusive intervals (too little data) hold the rollout and never fail it;
`failureLimit` failed intervals roll back: traffic to stable at once, the canary scaled to zero,
phase Degraded, the spec left as the user wrote it. A canary whose pods fail to start (the
model does not load, the image cannot be pulled: `PodFailure`, canarium.observation) is rolled
back the same way at once, without waiting for the progress deadline. The operator does not
retry that revision by itself: a new spec, reverting to the stable version, or `retry` moves on.

After promotion the bake (`bake`) still analyses the promoted revision, with the previous one
kept at zero pods: a failure, or `abort`, rolls back to it. `pause` stops the bake's clock (it
does not complete while paused; a resume starts it again in full); a failure still rolls back.
When the previous revision is gone, a failure leaves the promoted one serving but Degraded
(BakeFailedPreviousGone) until a new spec, and `abort` is refused (CommandIgnored).

Without a policy a new revision replaces the old one once Ready (`replace`); while the policy a
ModelDeployment names is missing or invalid, a rollout holds where it is (`hold_for_policy`).
A rollback is kept in `status.aborted` (typed cause), never read back from a message, and the
traffic split comes from the router (`canarium.routers`): the machine sees weights only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Literal, Protocol

from canarium.api import (
    AbortStatus,
    AnalysisSpec,
    AnalysisStatus,
    Evidence,
    HistoryEntry,
    Measurement,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Reason,
    RevisionStatus,
    RolloutPolicySpec,
    Verdict,
)
from canarium.api.rolloutpolicy import RolloutStep
from canarium.api.status import MAX_HISTORY
from canarium.observation import RevisionObservation
from canarium.routers.base import TrafficRouter, canary_pods

ANNOTATION_COMMAND = "canarium.dev/command"  # "<verb>@<id>": promote, promote-full, abort, retry
ANNOTATION_PAUSED = "canarium.dev/paused"  # "true": hold the rollout where it is
COMMANDS = ("promote", "promote-full", "abort", "retry")

EventType = Literal["Normal", "Warning"]


class Hold(Enum):
    """What keeps a rollout at a step."""

    PODS = "the canary's pods are not ready yet"
    PERSON = "a pause until promoted"
    TIMER = "a timed pause"
    ANALYSIS = "no passed analysis interval in the step yet"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


class JudgementLike(Protocol):
    """What the analysis hands over (canarium.analysis.Judgement)."""

    @property
    def verdict(self) -> Verdict: ...

    @property
    def measurements(self) -> list[Measurement]: ...

    @property
    def summary(self) -> str: ...

    @property
    def evidence(self) -> list[Evidence]: ...


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis interval that the controller carried out before this reconcile."""

    time: datetime
    judgement: JudgementLike | None  # None: the first snapshot of a window was taken


@dataclass
class RevisionPlan:
    name: str
    spec: ModelDeploymentSpec
    replicas: int | None  # None: left to the HorizontalPodAutoscaler
    role: str  # "stable" or "canary": the Deployment's role label


@dataclass
class Decision:
    status: ModelDeploymentStatus
    revisions: list[RevisionPlan]
    stable: str
    canary: str | None
    route_canary_weight: int  # percent of traffic the router sends to the canary
    reason: Reason  # the conditions' reason
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class RolloutInput:
    spec: ModelDeploymentSpec
    desired: str  # the revision the spec asks for
    status: ModelDeploymentStatus
    policy: RolloutPolicySpec | None  # None: a new revision replaces the old once Ready
    revisions: dict[str, RevisionObservation]
    now: datetime
    router: TrafficRouter  # the state machine asks it for numbers only
    progress_deadline_seconds: int = 600
    policy_error: str | None = None  # the referenced RolloutPolicy is missing or invalid
    analysis_run: AnalysisRun | None = None
    command: str | None = None  # the canarium.dev/command annotation's value
    paused: bool = False


def parse_command(value: str | None) -> str | None:
    """The verb of a canarium.dev/command annotation value ("promote@1700000000")."""
    if not value:
        return None
    verb = value.split("@", 1)[0].strip()
    return verb if verb in COMMANDS else None


def push_history(
    status: ModelDeploymentStatus,
    revision: str,
    version: str | None,
    outcome: Outcome,
    now: datetime,
    reason: str,
    cause: Reason | None = None,
) -> None:
    entry = HistoryEntry(
        revision=revision,
        model_version=version,
        outcome=outcome,
        time=now,
        reason=reason[:1024],
        cause=cause,
    )
    status.history = [entry, *status.history][:MAX_HISTORY]
    # A later outcome ends what an abort held (a rollback sets it again after this).
    status.aborted = None


def serving_phase(
    status: ModelDeploymentStatus,
    name: str,
    version: str,
    observed: RevisionObservation | None,
    desired_pods: int | None,
) -> Reason:
    """Phase and message when one revision serves everything; returns the condition reason.

    Pods that fail to start make it Degraded at once, for as long as they fail: the phase
    follows the pods, so a fix (a new image, a corrected ConfigMap) makes it Healthy again."""
    if observed is not None and observed.ready:
        status.phase = "Healthy"
        status.message = f"model {version} served by {name}"
        return Reason.AVAILABLE
    if observed is not None and observed.failed and observed.failure is not None:
        status.phase = "Degraded"
        status.message = observed.failure_message()
        return observed.failure.cause
    if observed is not None and observed.deadline_exceeded:
        status.phase = "Degraded"
        status.message = f"revision {name} did not become Ready within its progress deadline"
        return Reason.PROGRESS_DEADLINE_EXCEEDED
    ready = observed.ready_replicas if observed else 0
    status.phase = "Progressing"
    status.message = (
        f"revision {name} {ready}/{desired_pods if desired_pods is not None else '?'} ready"
    )
    if observed is not None and observed.failure is not None:
        status.message += f"; {observed.failure.describe()}"
    return Reason.REPLICAS_NOT_READY


def baking_message(version: str, until: datetime, previous: str) -> str:
    return (
        f"model {version} promoted; baking under analysis until {until.isoformat()} "
        f"({previous} kept scaled down)"
    )


def steps_hash(steps: Sequence[RolloutStep]) -> str:
    """A short hash of a policy's steps: status.stepsHash, to notice them changing mid-rollout."""
    data = json.dumps([step.model_dump(mode="json") for step in steps], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def analysis_due(inp: RolloutInput) -> bool:
    """Whether the controller should measure before reconciling: the canary takes traffic (or a
    promoted revision bakes) and an interval has passed since the last measurement."""
    analysis = inp.policy.analysis if inp.policy else None
    status = inp.status
    if analysis is None or status.stable is None:
        return False
    canary = status.canary
    rolling = (
        canary is not None
        and canary.name == inp.desired
        and status.phase in ("Progressing", "Paused")
        and (canary.weight or 0) > 0
        and (canary.ready_replicas or 0) > 0
    )
    baking = status.previous is not None and status.bake_until is not None
    if not rolling and not baking:
        return False
    due = next_analysis_at(status.analysis, analysis)
    return due is None or inp.now >= due


def next_analysis_at(state: AnalysisStatus | None, analysis: AnalysisSpec) -> datetime | None:
    """When the next interval is due; None: now (the first snapshot starts the first window).
    The first judged interval waits for `initialDelay` when that is longer than `interval`."""
    last = state.last_run_time if state else None
    if last is None:
        return None
    wait = analysis.interval_seconds
    if state is not None and state.intervals == 0 and analysis.initial_delay:
        wait = max(wait, analysis.initial_delay_seconds)
    return last + timedelta(seconds=wait)


def _seconds_until(now: datetime, then: datetime) -> float:
    return max(0.0, (then - now).total_seconds())


class _Machine:
    """One decision. Attributes are the working state; `run` returns the Decision."""

    def __init__(self, inp: RolloutInput, policy: RolloutPolicySpec) -> None:
        self.inp = inp
        self.policy = policy
        self.status = inp.status.model_copy(deep=True)
        self.events: list[Event] = []
        self.requeue: list[float] = []
        self.total = inp.spec.serving.replicas
        self.autoscaled = inp.spec.serving.autoscaling is not None

    # --- helpers -------------------------------------------------------------------------
    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def after(self, seconds: float) -> None:
        self.requeue.append(seconds)

    def observed(self, name: str | None) -> RevisionObservation | None:
        return self.inp.revisions.get(name) if name else None

    def ready_count(self, name: str | None) -> int:
        obs = self.observed(name)
        return obs.ready_replicas if obs else 0

    def step_label(self, index: int) -> str:
        steps = self.policy.steps
        step = steps[index]
        if step.set_weight is not None:
            what = f"setWeight {step.set_weight}"
        elif step.pause is not None and step.pause.duration:
            what = f"pause {step.pause.duration}"
        else:
            what = "pause until promoted"
        return f"step {index + 1}/{len(steps)} ({what})"

    def split(self, weight: int, stable: str) -> tuple[int | None, int]:
        """(stable, canary) pods at a canary weight. With autoscaling the stable revision stays
        under its HorizontalPodAutoscaler (None) and the canary is sized from the stable's
        current size, as with Gateway API: the replicas router then delivers
        canary / (stable + canary) of the traffic, reported as the effective weight."""
        if not self.autoscaled:
            return self.inp.router.pods(self.total, weight)
        observed = self.observed(stable)
        size = observed.replicas if observed is not None and observed.replicas > 0 else self.total
        return None, canary_pods(size, weight)

    def weight_at(self, index: int) -> int:
        """The canary weight in force at a step: the last setWeight at or before it."""
        weight = 0
        for step in self.policy.steps[: index + 1]:
            if step.set_weight is not None:
                weight = step.set_weight
        return weight

    def decision(
        self,
        revisions: list[RevisionPlan],
        stable: str,
        canary: str | None,
        route_weight: int,
        reason: Reason,
    ) -> Decision:
        return Decision(
            status=self.status,
            revisions=revisions,
            stable=stable,
            canary=canary,
            route_canary_weight=route_weight,
            reason=reason,
            events=self.events,
            requeue_after=min(self.requeue) if self.requeue else None,
        )

    def record_analysis(self) -> None:
        run = self.inp.analysis_run
        if run is None:
            return
        analysis = self.status.analysis or AnalysisStatus()
        analysis.last_run_time = run.time
        if run.judgement is not None:
            judgement = run.judgement
            analysis.intervals += 1
            analysis.last_verdict = judgement.verdict
            analysis.measurements = list(judgement.measurements)[:20]
            analysis.evidence = list(judgement.evidence)
            if judgement.verdict == "Failed":
                analysis.failures += 1
                analysis.consecutive_inconclusive = 0
            elif judgement.verdict == "Inconclusive":
                analysis.consecutive_inconclusive += 1
            else:
                analysis.consecutive_inconclusive = 0
        self.status.analysis = analysis

    def schedule_analysis(self) -> None:
        """Look again when the next analysis interval is due."""
        analysis = self.policy.analysis
        if analysis is None:
            return
        due = next_analysis_at(self.status.analysis, analysis)
        if due is None:
            self.after(1.0)  # the first snapshot as soon as the canary has traffic
        else:
            self.after(_seconds_until(self.inp.now, due))

    def analysis_failure(self) -> str | None:
        """Why the analysis failed when `failureLimit` intervals failed; None while it has not."""
        analysis = self.policy.analysis
        state = self.status.analysis
        if analysis is None or state is None:
            return None
        shown = [e.check for e in state.evidence if e.decision == "Failed"]
        if not shown and state.failures < analysis.failure_limit:
            return None
        parts = [
            f"{m.check}{_fmt(m.value)} (limit {m.threshold})"
            + (f": {m.reason}" if m.reason else "")
            for m in state.measurements
            if m.verdict == "Failed"
        ]
        if shown:
            # The evidence of the whole rollout: no need to wait for failureLimit intervals.
            head = f"analysis showed {', '.join(shown)} worse than tolerated: "
        else:
            head = f"analysis failed {state.failures}/{analysis.failure_limit} intervals: "
        return head + ("; ".join(parts) or "no detail")

    def shown_within(self) -> bool:
        """Whether early promotion applies: the policy allows it and every comparison with
        stable has shown the canary within its tolerance."""
        analysis = self.policy.analysis
        state = self.status.analysis
        if analysis is None or not analysis.early_promotion or state is None:
            return False
        checks = analysis.checks
        compared = [
            name
            for name, spec in (("errorRate", checks.error_rate), ("latencyP99", checks.latency_p99))
            if spec is not None
        ]
        decided = {e.check: e.decision for e in state.evidence}
        return bool(compared) and all(decided.get(name) == "Passed" for name in compared)

    def revision_status(
        self, name: str, version: str, replicas: int | None, weight: int, effective: float
    ) -> RevisionStatus:
        obs = self.observed(name)
        return RevisionStatus(
            name=name,
            model_version=version,
            replicas=replicas if replicas is not None else (obs.replicas if obs else None),
            ready_replicas=obs.ready_replicas if obs else 0,
            weight=weight,
            effective_weight=effective,
        )

    def set_serving_status(
        self,
        stable: str,
        stable_version: str,
        stable_replicas: int | None,
        canary: str | None,
        canary_replicas: int | None,
        weight: int,
        canary_version: str | None = None,
    ) -> int:
        """Fill status.stable/canary; returns the route weight for the canary (Gateway API
        gives the canary weight only once it has a ready pod)."""
        delivered = self.inp.router.delivered(
            weight, self.ready_count(stable), self.ready_count(canary)
        )
        self.status.stable = self.revision_status(
            stable, stable_version, stable_replicas, 100 - weight, delivered.stable
        )
        self.status.canary = (
            self.revision_status(
                canary,
                canary_version or self.inp.spec.model.version,
                canary_replicas,
                weight,
                delivered.canary,
            )
            if canary
            else None
        )
        return delivered.route_weight

    # --- the machine ---------------------------------------------------------------------
    def run(self) -> Decision:
        inp = self.inp
        status = self.status
        verb = None
        if inp.command and inp.command != inp.status.last_command:
            verb = parse_command(inp.command)
            status.last_command = inp.command
        stable_name = status.stable.name if status.stable else None
        stable_obs = self.observed(stable_name)
        stable_spec = (
            inp.spec if stable_name == inp.desired else (stable_obs.spec if stable_obs else None)
        )
        if stable_name is None or stable_spec is None:
            return self.first_deploy()
        if (
            stable_name != inp.desired
            and stable_obs is not None
            and stable_obs.failed
            and not self.is_rolled_back(inp.desired)
        ):
            # The stable revision cannot serve (e.g. a first revision whose model never
            # loaded): there is nothing to protect and nothing to compare a canary with.
            push_history(
                status, stable_name, stable_spec.model.version, "Replaced", inp.now,
                f"replaced by {inp.desired} while its own pods failed to start",
            )  # fmt: skip
            self.event(
                "Normal", "Replaced",
                f"{stable_name} cannot serve (its pods fail to start): {inp.desired} (model "
                f"{inp.spec.model.version}) replaces it without a canary",
            )  # fmt: skip
            return self.first_deploy()
        self.record_analysis()
        if inp.desired == stable_name:
            return self.steady(stable_name, stable_spec, verb)
        return self.rolling(stable_name, stable_spec, verb)

    def first_deploy(self) -> Decision:
        """No stable revision yet (or it is gone with its spec): the spec's revision is
        stable at once; there is nothing to compare a canary with."""
        inp = self.inp
        name = inp.desired
        replicas = None if self.autoscaled else self.total
        self.status.canary = None
        self.status.previous = None
        self.status.bake_until = None
        self.status.analysis = None
        self.status.current_step = None
        self.status.step_started_at = None
        self.status.pause_reason = None
        self.set_serving_status(name, inp.spec.model.version, replicas, None, None, 0)
        reason = serving_phase(
            self.status, name, inp.spec.model.version, self.observed(name), self.total
        )
        return self.decision(
            [RevisionPlan(name, inp.spec, replicas, "stable")], name, None, 0, reason
        )

    def steady(
        self, stable: str, stable_spec: ModelDeploymentSpec, verb: str | None = None
    ) -> Decision:
        """The spec asks for the stable revision: no rollout, or a bake after promotion, or a
        rollout that the user ended by reverting the spec."""
        status = self.status
        replicas = None if self.autoscaled else self.total
        kept = self.drop_canary(stable)
        status.current_step = None
        status.step_started_at = None
        status.pause_reason = None
        plans = [RevisionPlan(stable, stable_spec, replicas, "stable")]
        previous = status.previous
        if previous is not None and previous.name and status.bake_until is not None:
            baking = self.bake(stable, stable_spec, previous, verb, plans, replicas)
            if baking is not None:
                return baking
        status.previous = None
        status.bake_until = None
        status.analysis = None
        if kept is not None and kept.spec is not None:
            plans.append(RevisionPlan(kept.name, kept.spec, kept.replicas, "canary"))
            route = self.set_serving_status(
                stable, stable_spec.model.version, replicas, kept.name, kept.replicas, 0,
                canary_version=kept.spec.model.version,
            )  # fmt: skip
            reason = serving_phase(
                status, stable, stable_spec.model.version, self.observed(stable), self.total
            )
            status.message = f"{status.message}; {kept.name} serves until then"
            return self.decision(plans, stable, kept.name, route, reason)
        self.set_serving_status(stable, stable_spec.model.version, replicas, None, None, 0)
        reason = serving_phase(
            status, stable, stable_spec.model.version, self.observed(stable), self.total
        )
        failed_bake = status.aborted
        if (
            status.phase == "Healthy"
            and failed_bake is not None
            and failed_bake.revision == stable
            and failed_bake.cause == Reason.BAKE_FAILED_PREVIOUS_GONE
        ):
            # Its bake failed with nothing to go back to: it serves, but it is not Healthy
            # until a person moves on (a new version, or the old one rolled out again).
            status.phase = "Degraded"
            status.message = (
                f"model {stable_spec.model.version} ({stable}) {failed_bake.message}. It keeps "
                "serving all traffic: apply a fixed version, or revert the spec to roll the "
                "previous version out again."
            )
            reason = Reason.BAKE_FAILED_PREVIOUS_GONE
        return self.decision(plans, stable, None, 0, reason)

    def drop_canary(self, stable: str) -> RevisionObservation | None:
        """The spec went back to the stable version: the canary is dropped (an Aborted entry
        when it was mid-rollout). Returns it when it must keep serving for now."""
        status = self.status
        if status.canary is None or not status.canary.name:
            return None
        kept = None
        dropped = self.observed(status.canary.name)
        if (
            dropped is not None
            and dropped.spec is not None
            and dropped.ready_replicas > 0
            and self.ready_count(stable) == 0
        ):
            # Never leave nothing serving: the dropped canary keeps its pods (and serves)
            # until the stable revision has a ready pod again.
            kept = dropped
        if status.phase in ("Progressing", "Paused") and status.current_step is not None:
            push_history(
                status, status.canary.name, status.canary.model_version, "Aborted",
                self.inp.now, "the spec went back to the stable version", Reason.SPEC_REVERTED,
            )  # fmt: skip
            self.event(
                "Normal", "RolloutAborted",
                f"spec reverted to {stable}: canary {status.canary.name} dropped",
            )  # fmt: skip
        status.canary = None
        return kept

    def bake(
        self,
        stable: str,
        stable_spec: ModelDeploymentSpec,
        previous: RevisionStatus,
        verb: str | None,
        plans: list[RevisionPlan],
        replicas: int | None,
    ) -> Decision | None:
        """The promoted revision bakes under analysis with the previous one kept scaled down:
        a failure or an abort rolls back to it. None: the bake is over, passed."""
        inp = self.inp
        status = self.status
        assert previous.name is not None  # steady() checked both
        assert status.bake_until is not None
        prev_obs = self.observed(previous.name)
        fallback = prev_obs.spec if prev_obs is not None else None
        failure = self.analysis_failure()
        if failure is not None:
            if fallback is None:
                return self.bake_failed_without_fallback(stable, stable_spec, previous, failure)
            status.previous = None
            status.bake_until = None
            return self.rollback(previous.name, fallback, stable, "RolledBack", failure)
        if verb == "abort":
            if fallback is not None:
                status.previous = None
                status.bake_until = None
                return self.rollback(
                    previous.name, fallback, stable, "Aborted",
                    "aborted by a person during its bake",
                )  # fmt: skip
            self.event(
                "Warning", "CommandIgnored",
                f"abort ignored: the previous revision {previous.name} is gone, there is "
                f"nothing to roll back to; {stable} keeps serving",
            )  # fmt: skip
        if status.phase == "Paused" and not inp.paused:
            # Resumed: the bake starts again, in full (as a step's pause does).
            status.bake_until = inp.now + timedelta(seconds=self.policy.bake_seconds)
        if not inp.paused and inp.now >= status.bake_until:
            self.event(
                "Normal", "BakeCompleted", f"{stable} passed its bake; {previous.name} removed"
            )
            return None
        if fallback is not None:
            plans.append(RevisionPlan(previous.name, fallback, 0, "previous"))
        if not inp.paused:
            # While paused the bake's clock is stopped: nothing ends it but a failure.
            self.after(_seconds_until(inp.now, status.bake_until))
        self.schedule_analysis()
        self.set_serving_status(stable, stable_spec.model.version, replicas, None, None, 0)
        if inp.paused:
            status.phase = "Paused"
            status.pause_reason = "paused by a person (canarium.dev/paused)"
            status.message = (
                f"model {stable_spec.model.version} promoted; its bake is paused "
                f"({previous.name} kept scaled down): it starts again, in full, when resumed"
            )
        else:
            status.phase = "Progressing"
            status.message = baking_message(
                stable_spec.model.version, status.bake_until, previous.name
            )
        return self.decision(plans, stable, None, 0, Reason.BAKING)

    def rolling(self, stable: str, stable_spec: ModelDeploymentSpec, verb: str | None) -> Decision:
        """The spec asks for a new revision: ordered guards, each of which may end the
        reconcile (as Argo Rollouts' rolloutCanary), then the steps."""
        canary = self.inp.desired
        if self.status.previous is not None:
            # A new version while the last one bakes: the bake ends, its fallback goes.
            self.status.previous = None
            self.status.bake_until = None
        self.start_or_restart(canary, verb)
        if self.is_rolled_back(canary):
            return self.hold_rolled_back(stable, stable_spec, canary)
        if verb == "abort":
            return self.rollback(stable, stable_spec, canary, "Aborted", "aborted by a person")
        failure = self.canary_failure(canary)
        if failure is not None:
            why, cause = failure
            return self.rollback(stable, stable_spec, canary, "RolledBack", why, cause)
        if self.inp.paused and verb in ("promote", "promote-full"):
            # Argo Rollouts' promote also unpauses; here the pause is the user's annotation, which
            # the operator does not remove: the pause wins and the command is used up.
            self.event(
                "Warning", "CommandIgnored",
                f"{verb} ignored: the rollout is paused (canarium.dev/paused); "
                "resume it, then promote again",
            )  # fmt: skip
            verb = None
        index, started, hold = self.advance(stable, canary, verb)
        if index >= len(self.policy.steps):
            # Every timed step was gated on analysis; the last setWeight ends the rollout.
            return self.promote(stable, stable_spec, canary)
        return self.at_step(stable, stable_spec, canary, index, started, hold)

    def start_or_restart(self, canary: str, verb: str | None) -> None:
        """Start the steps from the first when the canary is new, retried, or its steps
        changed."""
        status = self.status
        steps = self.policy.steps
        # A canary that is not mid-rollout (no step: kept serving after the spec went back to
        # stable, whose pods were not ready) starts from the first step when asked for again.
        restart = status.current_step is None and status.phase != "Degraded"
        if status.canary is None or status.canary.name != canary or restart:
            if status.canary is not None and status.canary.name and not restart:
                push_history(
                    status, status.canary.name, status.canary.model_version, "Replaced",
                    self.inp.now, f"superseded by {canary} before it finished",
                )  # fmt: skip
            self.start(canary)
        elif verb == "retry" and status.phase == "Degraded":
            self.event("Normal", "RolloutRetried", f"retrying {canary} from the first step")
            self.start(canary)
        elif status.steps_hash is None:
            # Rolling out under an operator that kept no hash: its steps are the current ones.
            status.steps_hash = steps_hash(steps)
        elif status.steps_hash != steps_hash(steps) and status.current_step is not None:
            # As Argo Rollouts does when a canary's steps change: the new steps from the
            # first, with the same canary (an old index could point past the new steps).
            self.event(
                "Normal", "StepsChanged", f"the policy's steps changed: {canary} starts them again"
            )
            self.start(canary)

    def canary_failure(self, canary: str) -> tuple[str, Reason] | None:
        """Why the canary must be rolled back now, and the typed cause; None: it may go on."""
        canary_obs = self.observed(canary)
        if canary_obs is not None and canary_obs.failed and canary_obs.failure is not None:
            # Its pods do not start (the model does not load, the image cannot be pulled...):
            # no need to wait for the progress deadline.
            return canary_obs.failure_message(), canary_obs.failure.cause
        if canary_obs is not None and canary_obs.deadline_exceeded and not canary_obs.ready:
            return (
                f"revision {canary} did not become Ready within its progress deadline",
                Reason.PROGRESS_DEADLINE_EXCEEDED,
            )
        failure = self.analysis_failure()
        if failure is not None:
            return failure, Reason.ANALYSIS_FAILED
        return None

    def advance(
        self, stable: str, canary: str, verb: str | None
    ) -> tuple[int, datetime, tuple[Hold, str] | None]:
        """Go through the steps from the current one as far as they allow now: (the step it
        stops at, when that step started, what holds it there)."""
        inp = self.inp
        steps = self.policy.steps
        index = self.status.current_step or 0
        # While paused by a person the step's clock is stopped (unset); a resume starts the
        # step's pause again, in full, and it needs an analysis interval of its own again.
        started = self.status.step_started_at or inp.now
        if verb == "promote-full":
            self.event("Normal", "PromotedFully", "promoted to the end by a person")
            return len(steps), started, None
        while index < len(steps) and not inp.paused:
            hold = self.step_hold(index, started, stable, canary, verb)
            if hold is not None:
                return index, started, hold
            if verb == "promote" and steps[index].pause is not None:
                verb = None
                self.event("Normal", "Promoted", f"{self.step_label(index)} ended by a person")
            index += 1
            started = inp.now
            if index < len(steps):
                self.event("Normal", "StepStarted", f"{canary}: {self.step_label(index)}")
        return index, started, None

    def step_hold(
        self, index: int, started: datetime, stable: str, canary: str, verb: str | None
    ) -> tuple[Hold, str] | None:
        """What keeps the rollout at a step now; None: the step is done."""
        weight = self.weight_at(index)
        step = self.policy.steps[index]
        if step.set_weight is not None:
            _, canary_replicas = self.split(weight, stable)
            if self.ready_count(canary) < canary_replicas:
                return Hold.PODS, f"waiting for {canary} to have {canary_replicas} ready pods"
            return None
        if step.pause is None or verb == "promote":
            return None
        if step.pause.duration is None:
            return Hold.PERSON, "paused until promoted (kubectl canarium promote)"
        return self.timed_pause_hold(index, started, canary, step.pause.seconds or 0, weight)

    def timed_pause_hold(
        self, index: int, started: datetime, canary: str, seconds: float, weight: int
    ) -> tuple[Hold, str] | None:
        """What keeps the rollout at a timed pause: its time, then a passed analysis interval
        (neither when the analysis showed the canary within tolerance and the policy promotes
        early)."""
        if self.shown_within():
            self.event(
                "Normal", "PromotedEarly",
                f"{canary}: {self.step_label(index)} skipped, the analysis showed it within "
                "tolerance (earlyPromotion)",
            )  # fmt: skip
            return None
        ends = started + timedelta(seconds=seconds)
        if self.inp.now < ends:
            self.after(_seconds_until(self.inp.now, ends))
            return Hold.TIMER, f"pausing until {ends.isoformat()}"
        gate = self.analysis_gate(started, weight)
        return (Hold.ANALYSIS, gate) if gate else None

    def at_step(
        self,
        stable: str,
        stable_spec: ModelDeploymentSpec,
        canary: str,
        index: int,
        started: datetime,
        hold: tuple[Hold, str] | None,
    ) -> Decision:
        """The rollout stays at a step: serve its weight and say why it waits."""
        inp = self.inp
        status = self.status
        status.current_step = index
        status.step_started_at = None if inp.paused else started
        weight = self.weight_at(index)
        stable_replicas, canary_replicas = self.split(weight, stable)
        route = self.set_serving_status(
            stable, stable_spec.model.version, stable_replicas, canary, canary_replicas, weight
        )
        if weight > 0 and self.ready_count(canary) > 0:
            # Analysed only while the canary takes traffic (analysis_due); its pods getting
            # ready is a watch event.
            self.schedule_analysis()
        held = hold[1] if hold else ""
        inconclusive = status.analysis.consecutive_inconclusive if status.analysis else 0
        limit = self.policy.analysis.inconclusive_limit if self.policy.analysis else None
        paused_by_data = limit is not None and 0 < limit <= inconclusive  # 0: never
        if inp.paused:
            status.pause_reason = "paused by a person (canarium.dev/paused)"
        elif paused_by_data:
            status.pause_reason = (
                f"{inconclusive} inconclusive intervals in a row (inconclusiveLimit {limit}): "
                "check the traffic, then promote"
            )
        elif hold is not None and hold[0] is Hold.PERSON:
            status.pause_reason = held
        else:
            status.pause_reason = None
        status.phase = "Paused" if status.pause_reason else "Progressing"
        reason = Reason.PAUSED if status.pause_reason else Reason.ROLLOUT_IN_PROGRESS
        effective = status.canary.effective_weight if status.canary else 0
        status.message = (
            f"canary {canary} (model {inp.spec.model.version}) at {self.step_label(index)}, "
            f"weight {weight}% (effective {effective}%)"
            + (f"; {held}" if held else "")
            + (f"; {status.pause_reason}" if status.phase == "Paused" and not held else "")
        )
        plans = [
            RevisionPlan(stable, stable_spec, stable_replicas, "stable"),
            RevisionPlan(canary, inp.spec, canary_replicas, "canary"),
        ]
        return self.decision(plans, stable, canary, route, reason)

    def analysis_gate(self, step_started: datetime, weight: int) -> str:
        """Why the rollout may not leave a timed step yet ("" when it may): with analysis,
        the last interval measured during the step must have passed. No data holds.

        At weight 100 the stable revision takes no traffic, so comparisons with it cannot be
        made: there, enough canary samples and no failed check are enough."""
        if self.policy.analysis is None:
            return ""
        analysis = self.status.analysis
        if analysis is None or analysis.last_run_time is None or analysis.last_verdict is None:
            return "holding for a first analysis interval"
        if analysis.last_run_time <= step_started:
            # Measured when the step started (in the reconcile that started it): that interval
            # judged the traffic of the step before.
            return "holding for an analysis interval of this step"
        if analysis.last_verdict == "Passed":
            return ""
        samples = next((m for m in analysis.measurements if m.check == "samples"), None)
        if (
            weight >= 100
            and analysis.last_verdict == "Inconclusive"
            and samples is not None
            and samples.verdict == "Passed"
        ):
            return ""
        why = next(
            (m.reason for m in analysis.measurements if m.verdict == "Inconclusive" and m.reason),
            "",
        )
        return f"holding: analysis {analysis.last_verdict.lower()}" + (f" ({why})" if why else "")

    def start(self, canary: str) -> None:
        status = self.status
        status.steps_hash = steps_hash(self.policy.steps)
        status.current_step = 0
        status.step_started_at = self.inp.now
        status.analysis = None
        status.pause_reason = None
        status.phase = "Progressing"
        self.event(
            "Normal", "RolloutStarted",
            f"canary {canary} (model {self.inp.spec.model.version}): {self.step_label(0)}",
        )  # fmt: skip

    def is_rolled_back(self, canary: str) -> bool:
        """The canary was rolled back or aborted and holds (Degraded) until a person moves on.
        A rollout ended by the spec going back to stable is not held: asking for the version
        again is a person's new request."""
        aborted = self.status.aborted
        return (
            self.status.phase == "Degraded"
            and aborted is not None
            and aborted.revision == canary
            and aborted.cause != Reason.BAKE_FAILED_PREVIOUS_GONE
        )

    def rollback(
        self,
        stable: str,
        stable_spec: ModelDeploymentSpec,
        canary: str,
        outcome: Outcome,
        why: str,
        cause: Reason | None = None,
    ) -> Decision:
        """Roll the canary back: `cause` is the typed reason (the Degraded condition's), kept
        in the history entry so that every later reconcile reports the same."""
        status = self.status
        cause = cause or (Reason.ANALYSIS_FAILED if outcome == "RolledBack" else Reason.ABORTED)
        push_history(status, canary, self.inp.spec.model.version, outcome, self.inp.now, why, cause)
        status.aborted = AbortStatus(
            revision=canary, cause=cause, message=why[:1024], time=self.inp.now
        )
        self.event(
            "Warning",
            "RolledBack" if outcome == "RolledBack" else "Aborted",
            f"{canary} rolled back, traffic back on {stable}: {why}",
        )
        return self.hold_rolled_back(stable, stable_spec, canary)

    def hold_rolled_back(
        self, stable: str, stable_spec: ModelDeploymentSpec, canary: str
    ) -> Decision:
        """After a rollback: all traffic on stable, the canary at zero pods (kept, for its logs
        and a quick retry) until the spec changes or a person says retry."""
        status = self.status
        replicas = None if self.autoscaled else self.total
        # Never leave nothing serving: the canary goes to zero once stable has a ready pod.
        canary_obs = self.observed(canary)
        keep = canary_obs.replicas if canary_obs else 0
        canary_replicas = 0 if self.ready_count(stable) > 0 else keep
        # Gateway API: all traffic to the canary when only its pods are ready (as the
        # replicas router's Service does), none otherwise.
        route = self.set_serving_status(
            stable, stable_spec.model.version, replicas, canary, canary_replicas, 0
        )
        aborted = status.aborted
        assert aborted is not None  # rollback() or an earlier reconcile set it
        status.phase = "Degraded"
        status.current_step = None
        status.step_started_at = None
        status.pause_reason = None
        status.message = (
            f"model {self.inp.spec.model.version} ({canary}) was "
            f"{'aborted' if aborted.cause == Reason.ABORTED else 'rolled back'}: "
            f"{aborted.message}. Traffic is on {stable} (model "
            f"{stable_spec.model.version}). Revert the spec, apply a new version, or "
            f"`kubectl canarium retry`."
        )
        plans = [
            RevisionPlan(stable, stable_spec, replicas, "stable"),
            RevisionPlan(canary, self.inp.spec, canary_replicas, "canary"),
        ]
        return self.decision(plans, stable, canary, route, aborted.cause)

    def promote(self, stable: str, stable_spec: ModelDeploymentSpec, canary: str) -> Decision:
        inp = self.inp
        status = self.status
        replicas = None if self.autoscaled else self.total
        push_history(
            status, canary, inp.spec.model.version, "Promoted", inp.now,
            f"replaced {stable} (model {stable_spec.model.version})",
        )  # fmt: skip
        self.event("Normal", "Promoted", f"{canary} (model {inp.spec.model.version}) is stable")
        status.canary = None
        status.current_step = None
        status.step_started_at = None
        status.pause_reason = None
        plans = [RevisionPlan(canary, inp.spec, replicas, "stable")]
        bake = self.policy.bake_seconds
        if bake > 0 and self.policy.analysis is not None:
            status.previous = RevisionStatus(
                name=stable, model_version=stable_spec.model.version, replicas=0, weight=0
            )
            status.bake_until = inp.now + timedelta(seconds=bake)
            # The bake adds to the evidence of the rollout (and compares with stable's rate
            # during it); intervals count afresh.
            evidence = status.analysis.evidence if status.analysis else []
            status.analysis = AnalysisStatus(evidence=evidence)
            plans.append(RevisionPlan(stable, stable_spec, 0, "previous"))
            self.after(bake)
            self.schedule_analysis()
            status.phase = "Progressing"
            status.message = baking_message(inp.spec.model.version, status.bake_until, stable)
            reason = Reason.BAKING
        else:
            status.previous = None
            status.bake_until = None
            status.analysis = None
            status.phase = "Healthy"
            status.message = f"model {inp.spec.model.version} served by {canary}"
            reason = Reason.AVAILABLE
        self.set_serving_status(canary, inp.spec.model.version, replicas, None, None, 0)
        return self.decision(plans, canary, None, 0, reason)

    def bake_failed_without_fallback(
        self,
        promoted: str,
        promoted_spec: ModelDeploymentSpec,
        previous: RevisionStatus,
        failure: str,
    ) -> Decision:
        """A failure during the bake when the previous revision is gone (its Deployment was
        deleted): nothing to roll back to. The promoted revision keeps serving, Degraded, and
        its history entry says why until a person moves on."""
        status = self.status
        inp = self.inp
        why = (
            f"failed its bake ({failure}); the previous revision "
            f"{previous.name} (model {previous.model_version}) is gone and cannot be restored"
        )[:1024]
        last = status.history[0] if status.history else None
        if last is not None and last.revision == promoted and last.outcome == "Promoted":
            status.history[0] = last.model_copy(
                update={"reason": why, "cause": Reason.BAKE_FAILED_PREVIOUS_GONE}
            )
        else:
            push_history(
                status, promoted, promoted_spec.model.version, "Promoted", inp.now, why,
                Reason.BAKE_FAILED_PREVIOUS_GONE,
            )  # fmt: skip
        status.aborted = AbortStatus(
            revision=promoted, cause=Reason.BAKE_FAILED_PREVIOUS_GONE, message=why, time=inp.now
        )
        self.event("Warning", Reason.BAKE_FAILED_PREVIOUS_GONE, f"{promoted} {why}")
        status.previous = None
        status.bake_until = None
        return self.steady(promoted, promoted_spec)


def _fmt(value: float | None) -> str:
    """A measurement's value after its check's name; none when it has none (a ratio with no
    errors on stable's side is undefined, yet the check can fail: its reason says why)."""
    if value is None:
        return ""
    return f" {value:.4g}"


def decide(inp: RolloutInput) -> Decision:
    """The decision for one ModelDeployment: under its RolloutPolicy, held while the policy it
    names is missing, or (no policy) the new revision replacing the old one once Ready."""
    if inp.policy is None:
        return hold_for_policy(inp) or replace(inp)
    decision = _Machine(inp, inp.policy).run()
    keep_serving(inp.revisions, decision)
    return decision


def replace(inp: RolloutInput) -> Decision:
    """No rollout policy: a new revision runs beside the old one at full size and replaces it
    once Ready, so nothing serves a gap."""
    spec = inp.spec
    status = inp.status.model_copy(deep=True)
    events: list[Event] = []
    desired = inp.desired
    # A command has nothing to act on without a policy; it is used up now, not carried out
    # on a later rollout once a policy appears.
    if inp.command is not None:
        status.last_command = inp.command
    replicas = None if spec.serving.autoscaling else spec.serving.replicas

    stable_name = status.stable.name if status.stable and status.stable.name else desired
    stable_obs = inp.revisions.get(stable_name)
    # The spec the stable revision was made from: the user's spec may already name a newer one.
    stable_spec = stable_obs.spec if stable_obs else None
    if stable_spec is None:
        # A first revision, or the stable revision's Deployment (and the spec it carried) is
        # gone or unreadable: start over from the spec the user asks for now.
        stable_name, stable_spec, stable_obs = desired, spec, inp.revisions.get(desired)
    canary_name = desired if stable_name != desired else None
    canary_obs = inp.revisions.get(desired) if canary_name else None

    if canary_name and canary_obs is not None and canary_obs.ready:
        events.append(
            Event(
                "Normal",
                "Replaced",
                f"revision {canary_name} (model {spec.model.version}) is Ready and replaces "
                f"{stable_name}",
            )
        )
        push_history(
            status, stable_name, stable_spec.model.version, "Replaced", inp.now,
            f"replaced by {canary_name}",
        )  # fmt: skip
        stable_name, stable_spec, stable_obs = canary_name, spec, canary_obs
        canary_name, canary_obs = None, None

    stable_ready = stable_obs.ready_replicas if stable_obs else 0
    canary_ready = canary_obs.ready_replicas if canary_obs else 0
    # Everything stays on the old revision until the new one replaces it (unless only the new
    # one has ready pods); a Service over both revisions spreads over both revisions' pods.
    delivered = inp.router.delivered(0, stable_ready, canary_ready)
    status.stable = RevisionStatus(
        name=stable_name,
        model_version=stable_spec.model.version,
        replicas=stable_obs.replicas if stable_obs else replicas,
        ready_replicas=stable_ready,
        weight=0 if canary_name else 100,
        effective_weight=delivered.stable,
    )
    status.canary = None
    canary_pods = canary_obs.replicas if canary_obs else replicas  # None: left to its HPA
    if canary_name:
        status.canary = RevisionStatus(
            name=canary_name,
            model_version=spec.model.version,
            replicas=canary_pods,
            ready_replicas=canary_ready,
            weight=100,
            effective_weight=delivered.canary,
        )
    status.current_step = None
    status.step_started_at = None
    status.pause_reason = None
    status.previous = None
    status.bake_until = None
    status.analysis = None

    if canary_name is None:
        reason = serving_phase(
            status, stable_name, stable_spec.model.version, stable_obs, status.stable.replicas
        )
    else:
        reason = replacing_phase(inp, status, canary_name, canary_obs, canary_pods, stable_name)

    plans = [RevisionPlan(stable_name, stable_spec, replicas, "stable")]
    if canary_name:
        # Not a canary under analysis: it is created as what it will become, the stable one.
        plans.append(RevisionPlan(canary_name, spec, replicas, "stable"))
    return Decision(
        status=status,
        revisions=plans,
        stable=stable_name,
        canary=canary_name,
        route_canary_weight=delivered.route_weight,
        reason=reason,
        events=events,
    )


def replacing_phase(
    inp: RolloutInput,
    status: ModelDeploymentStatus,
    name: str,
    observed: RevisionObservation | None,
    desired_pods: int | None,
    serving: str,
) -> Reason:
    """Phase and message while a new revision gets ready beside the one serving (no policy);
    returns the condition reason."""
    if observed is not None and observed.failed and observed.failure is not None:
        # Its pods do not start: said at once, not after the progress deadline. It is kept (and
        # its Deployment keeps trying), so a fix elsewhere (a corrected ConfigMap, a pushed
        # image) lets it replace the old revision; a new spec replaces it.
        status.phase = "Degraded"
        status.message = f"{observed.failure_message()}; traffic stays on {serving}"
        return observed.failure.cause
    if observed is not None and observed.deadline_exceeded:
        status.phase = "Degraded"
        status.message = (
            f"revision {name} did not become Ready within "
            f"{inp.progress_deadline_seconds}s; traffic stays on {serving}"
        )
        return Reason.PROGRESS_DEADLINE_EXCEEDED
    ready = observed.ready_replicas if observed else 0
    status.phase = "Progressing"
    status.message = (
        f"revision {name} (model {inp.spec.model.version}) "
        f"{ready}/{desired_pods if desired_pods is not None else '?'} ready; "
        f"{serving} keeps serving"
    )
    if observed is not None and observed.failure is not None:
        status.message += f"; {observed.failure.describe()}"
    return Reason.NEW_REVISION_NOT_READY


def hold_for_policy(inp: RolloutInput) -> Decision | None:
    """The referenced RolloutPolicy is missing or invalid while a stable revision serves and a
    new one is asked for: nothing moves until the policy is back (its watch event wakes the
    ModelDeployment). A canary keeps its pods, its weight and its step; a new version waits.
    A missing policy never promotes an unjudged canary (GitOps tools may apply a
    ModelDeployment before the policy it names). None: nothing to hold."""
    if not inp.policy_error or inp.spec.rollout is None:
        return None
    status = inp.status.model_copy(deep=True)
    desired = inp.desired
    stable = status.stable.name if status.stable else None
    stable_obs = inp.revisions.get(stable) if stable else None
    if stable is None or stable_obs is None or stable_obs.spec is None or stable == desired:
        return None
    assert status.stable is not None
    plans = [RevisionPlan(stable, stable_obs.spec, status.stable.replicas, "stable")]
    canary = status.canary.name if status.canary else None
    canary_obs = inp.revisions.get(canary) if canary else None
    weight = 0
    if status.canary is not None and canary_obs is not None and canary_obs.spec is not None:
        plans.append(RevisionPlan(str(canary), canary_obs.spec, status.canary.replicas, "canary"))
        weight = status.canary.weight or 0
        # Written afresh: the status's own message would grow at every reconcile.
        status.message = (
            f"canary {canary} (model {canary_obs.spec.model.version}) held at weight {weight}%"
        )
    else:
        canary = None
        status.message = f"model {inp.spec.model.version} waits for it"
        status.phase = "Progressing"
    if status.previous is not None and status.previous.name:
        prev_obs = inp.revisions.get(status.previous.name)
        if prev_obs is not None and prev_obs.spec is not None:
            plans.append(RevisionPlan(status.previous.name, prev_obs.spec, 0, "previous"))
    return Decision(
        status=status,
        revisions=plans,
        stable=stable,
        canary=canary,
        route_canary_weight=weight,
        reason=Reason.POLICY_NOT_FOUND,
    )


def keep_serving(revisions: dict[str, RevisionObservation], decision: Decision) -> None:
    """Never leave nothing serving: when no revision that the decision keeps has a ready pod
    but another one has (e.g. a canary superseded while the stable's pods were not ready), that
    one keeps its pods, as they are, until a kept revision has a ready pod. Stateless: it is
    decided again from what is observed at every reconcile."""

    def serves(plan: RevisionPlan) -> bool:
        obs = revisions.get(plan.name)
        return obs is not None and obs.ready_replicas > 0 and plan.replicas != 0

    if any(serves(plan) for plan in decision.revisions):
        return
    candidates = [
        obs for obs in revisions.values() if obs.ready_replicas > 0 and obs.spec is not None
    ]
    if not candidates:
        return
    best = max(candidates, key=lambda obs: (obs.ready_replicas, obs.name))
    if best.spec is None:  # for the type checker
        return
    planned = next((plan for plan in decision.revisions if plan.name == best.name), None)
    if planned is not None:
        planned.replicas = best.replicas
    else:
        decision.revisions.append(
            RevisionPlan(best.name, best.spec, best.replicas, best.created_as)
        )
    decision.status.message = (
        f"{decision.status.message or ''}; {best.name} keeps its {best.ready_replicas} ready "
        "pod(s) until then"
    )
