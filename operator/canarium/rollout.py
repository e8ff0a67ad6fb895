"""The rollout state machine. Pure: (spec, policy, status, observed revisions, analysis, now,
commands) -> a Decision (which revisions serve with how many pods, the traffic weight, the new
status, events, when to look again).

A change of the model or serving spec makes a new revision, the canary. The policy's steps move
traffic to it (`setWeight`), wait (`pause: {duration}`) or wait for a person (`pause: {}`);
analysis judges the canary at every interval while it takes traffic and during the bake after
promotion. Inconclusive intervals (too little data) hold the rollout and never fail it;
`failureLimit` failed intervals roll back: traffic to stable at once, the canary scaled to zero,
phase Degraded, the spec left as the user wrote it. A canary whose pods fail to start (the
model does not load, the image cannot be pulled: `PodFailure`, from canarium.pods) is rolled
back the same way at once, without waiting for the progress deadline. The operator does not
retry that revision by itself: a new spec, reverting to the stable version, or `retry` moves on.

After promotion the bake (`bake`) still analyses the promoted revision, with the previous one
kept at zero pods: a failure, or `abort`, rolls back to it. `pause` stops the bake's clock (it
does not complete while paused; a resume starts it again in full); a failure still rolls back.
When the previous revision is gone, a failure leaves the promoted one serving but Degraded
(BakeFailedPreviousGone) until a new spec, and `abort` is refused (CommandIgnored).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from canarium.api import (
    AnalysisSpec,
    AnalysisStatus,
    HistoryEntry,
    Measurement,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    RevisionStatus,
    RolloutPolicySpec,
    Verdict,
)
from canarium.api.rolloutpolicy import RolloutStep
from canarium.api.status import MAX_HISTORY

ANNOTATION_COMMAND = "canarium.dev/command"  # "<verb>@<id>": promote, promote-full, abort, retry
ANNOTATION_PAUSED = "canarium.dev/paused"  # "true": hold the rollout where it is
COMMANDS = ("promote", "promote-full", "abort", "retry")

EventType = Literal["Normal", "Warning"]


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


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis interval that the controller carried out before this reconcile."""

    time: datetime
    judgement: JudgementLike | None  # None: the first snapshot of a window was taken


# Why a serving pod does not start, as the kubelet reports it (a container's waiting reason).
# Each of these needs a person (or a fix elsewhere) and repeats until then. Not included:
# ErrImagePull (a single failed pull; it turns into ImagePullBackOff when it lasts) and a
# container that crashed once (kubelet restarts it at once; CrashLoopBackOff means it crashed
# again). Pods that cannot be scheduled are left to the progress deadline (a cluster
# autoscaler may still add a node).
FailureReason = Literal[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
]
# Typed causes of a revision that cannot serve (condition reasons and history causes).
CAUSE_MODEL_LOAD_FAILED = "ModelLoadFailed"  # the server reported that the model did not load
CAUSE_REVISION_FAILED = "RevisionFailed"  # the pods do not start for another reason
CAUSE_SPEC_REVERTED = "SpecReverted"  # a rollout ended by the spec going back to stable
# A promoted revision failed its bake and the previous revision is gone: nothing to go back to.
CAUSE_BAKE_FAILED = "BakeFailedPreviousGone"
# How canarium-serve starts its termination message (serving_image/canarium_serving/app.py);
# only dropped from what is shown, never read to decide anything.
SERVER_LOAD_FAILURE_PREFIX = "model not loaded: "


@dataclass(frozen=True)
class PodFailure:
    """What one failing serving pod says. Messages are redacted and truncated already: they
    go to status and events as they are."""

    pod: str
    container: str
    reason: FailureReason
    restart_count: int
    # The container's last termination (a crash loop): exit code, the runtime's reason
    # (Error, OOMKilled...) and the termination message the model server wrote.
    exit_code: int | None = None
    terminated_reason: str | None = None
    termination_message: str | None = None
    waiting_message: str | None = None  # the kubelet's detail (image pull, config errors)

    @property
    def cause(self) -> str:
        """ModelLoadFailed when the server wrote why the model did not load (it writes its
        termination log for that only); RevisionFailed for any other reason."""
        if self.reason == "CrashLoopBackOff" and self.termination_message:
            return CAUSE_MODEL_LOAD_FAILED
        return CAUSE_REVISION_FAILED

    def describe(self) -> str:
        """One line for status and events."""
        if self.reason == "CrashLoopBackOff":
            facts = [f"exit code {self.exit_code}"] if self.exit_code is not None else []
            if self.terminated_reason and self.terminated_reason != "Error":
                facts.append(self.terminated_reason)  # OOMKilled, ContainerCannotRun...
            restarts = self.restart_count
            facts.append(f"{restarts} restart{'' if restarts == 1 else 's'}")
            if self.termination_message:
                why = self.termination_message.removeprefix(SERVER_LOAD_FAILURE_PREFIX)
                return f"model failed to load in pod {self.pod} ({', '.join(facts)}): {why}"
            return (
                f"pod {self.pod} keeps crashing ({', '.join(facts)}); "
                f"see `kubectl logs --previous {self.pod}`"
            )
        what = {
            "ImagePullBackOff": "cannot pull its image",
            "InvalidImageName": "has an invalid image name",
            "ErrImageNeverPull": "cannot pull its image (imagePullPolicy Never)",
        }.get(self.reason, "cannot start its container")
        detail = f": {self.waiting_message}" if self.waiting_message else ""
        return f"pod {self.pod} {what} ({self.reason}){detail}"


@dataclass(frozen=True)
class RevisionObservation:
    """What the operator sees of one revision's Deployment and of its pods."""

    name: str
    rev_hash: str
    spec: ModelDeploymentSpec | None  # the spec it was rendered from
    created_as: str
    replicas: int  # spec.replicas
    ready_replicas: int
    updated_replicas: int
    up_to_date: bool  # the Deployment controller has seen the latest generation
    deadline_exceeded: bool  # progressDeadlineSeconds passed without progress
    # The first (by name) of the revision's pods that fail to start, and how many fail.
    failure: PodFailure | None = None
    failing_pods: int = 0

    @property
    def ready(self) -> bool:
        return (
            self.up_to_date
            and self.ready_replicas >= self.replicas > 0
            and (self.updated_replicas >= self.replicas)
        )

    @property
    def failed(self) -> bool:
        """Its pods fail to start and none is ready: the revision cannot serve. One failing
        pod beside ready ones (a node's trouble) is left to the progress deadline."""
        return self.failure is not None and self.ready_replicas == 0

    def failure_message(self) -> str:
        if self.failure is None:
            return ""
        others = self.failing_pods - 1
        more = f" (and {others} more failing pod{'s' if others > 1 else ''})" if others else ""
        return f"revision {self.name}: {self.failure.describe()}{more}"


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
    reason: str  # condition reason
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class RolloutInput:
    spec: ModelDeploymentSpec
    desired: str  # the revision the spec asks for
    status: ModelDeploymentStatus
    policy: RolloutPolicySpec
    revisions: dict[str, RevisionObservation]
    now: datetime
    router: str  # "replicas" or "gatewayAPI"
    analysis_run: AnalysisRun | None = None
    command: str | None = None  # the canarium.dev/command annotation's value
    paused: bool = False


def split_replicas(total: int, weight: int, router: str) -> tuple[int, int]:
    """(stable, canary) pod counts for a canary weight.

    With the replicas router the pod ratio is the traffic split (rounded the way Argo Rollouts'
    basic canary rounds: the canary up, the stable down by the same share), and the status
    reports the split the ready pods really deliver. With Gateway API the route sets the split
    and the stable revision keeps its full size, so an abort needs no scale-up.
    """
    canary = canary_pods(total, weight)
    if router == "gatewayAPI":
        return total, canary
    return total - math.floor(total * weight / 100), canary


def canary_pods(total: int, weight: int) -> int:
    """The canary's share of `total` pods at a weight: rounded up, at least one."""
    if weight <= 0:
        return 0
    return min(total, max(1, math.ceil(total * weight / 100)))


def effective_weights(stable_ready: int, canary_ready: int) -> tuple[float, float]:
    """(stable, canary) percentages that a Service over both revisions' ready pods delivers."""
    all_ready = stable_ready + canary_ready
    if all_ready == 0:
        return 0.0, 0.0
    canary = round(100.0 * canary_ready / all_ready, 2)
    return round(100.0 - canary, 2), canary


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
    cause: str | None = None,
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


def serving_phase(
    status: ModelDeploymentStatus,
    name: str,
    version: str,
    observed: RevisionObservation | None,
    desired_pods: int | None,
) -> str:
    """Phase and message when one revision serves everything; returns the condition reason.

    Pods that fail to start make it Degraded at once, for as long as they fail: the phase
    follows the pods, so a fix (a new image, a corrected ConfigMap) makes it Healthy again."""
    if observed is not None and observed.ready:
        status.phase = "Healthy"
        status.message = f"model {version} served by {name}"
        return "Available"
    if observed is not None and observed.failed and observed.failure is not None:
        status.phase = "Degraded"
        status.message = observed.failure_message()
        return observed.failure.cause
    if observed is not None and observed.deadline_exceeded:
        status.phase = "Degraded"
        status.message = f"revision {name} did not become Ready within its progress deadline"
        return "ProgressDeadlineExceeded"
    ready = observed.ready_replicas if observed else 0
    status.phase = "Progressing"
    status.message = (
        f"revision {name} {ready}/{desired_pods if desired_pods is not None else '?'} ready"
    )
    if observed is not None and observed.failure is not None:
        status.message += f"; {observed.failure.describe()}"
    return "ReplicasNotReady"


def steps_hash(steps: Sequence[RolloutStep]) -> str:
    """A short hash of a policy's steps: status.stepsHash, to notice them changing mid-rollout."""
    data = json.dumps([step.model_dump(mode="json") for step in steps], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def analysis_due(inp: RolloutInput) -> bool:
    """Whether the controller should measure before reconciling: the canary takes traffic (or a
    promoted revision bakes) and an interval has passed since the last measurement."""
    analysis = inp.policy.analysis
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

    def __init__(self, inp: RolloutInput) -> None:
        self.inp = inp
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
        steps = self.inp.policy.steps
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
            return split_replicas(self.total, weight, self.inp.router)
        observed = self.observed(stable)
        size = observed.replicas if observed is not None and observed.replicas > 0 else self.total
        return None, canary_pods(size, weight)

    def weight_at(self, index: int) -> int:
        """The canary weight in force at a step: the last setWeight at or before it."""
        weight = 0
        for step in self.inp.policy.steps[: index + 1]:
            if step.set_weight is not None:
                weight = step.set_weight
        return weight

    def decision(
        self,
        revisions: list[RevisionPlan],
        stable: str,
        canary: str | None,
        route_weight: int,
        reason: str,
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
        analysis = self.inp.policy.analysis
        if analysis is None:
            return
        due = next_analysis_at(self.status.analysis, analysis)
        if due is None:
            self.after(1.0)  # the first snapshot as soon as the canary has traffic
        else:
            self.after(_seconds_until(self.inp.now, due))

    def analysis_failure(self) -> str | None:
        """Why the analysis failed when `failureLimit` intervals failed; None while it has not."""
        analysis = self.inp.policy.analysis
        state = self.status.analysis
        if analysis is None or state is None or state.failures < analysis.failure_limit:
            return None
        parts = [
            f"{m.check} {_fmt(m.value)} (limit {m.threshold})"
            + (f": {m.reason}" if m.reason else "")
            for m in state.measurements
            if m.verdict == "Failed"
        ]
        return f"analysis failed {state.failures}/{analysis.failure_limit} intervals: " + (
            "; ".join(parts) or "no detail"
        )

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
        canary_ready = self.ready_count(canary)
        stable_ready = self.ready_count(stable)
        route = weight
        if self.inp.router == "gatewayAPI":
            # Exact weights, but never to a side without a ready pod while the other has one.
            if canary_ready == 0:
                route = 0
            elif stable_ready == 0:
                route = 100
            eff_canary = float(route)  # 0 when the canary has no ready pod
            eff_stable = 100.0 - eff_canary if stable_ready + canary_ready else 0.0
        else:
            eff_stable, eff_canary = effective_weights(stable_ready, canary_ready)
        self.status.stable = self.revision_status(
            stable, stable_version, stable_replicas, 100 - weight, eff_stable
        )
        self.status.canary = (
            self.revision_status(
                canary,
                canary_version or self.inp.spec.model.version,
                canary_replicas,
                weight,
                eff_canary,
            )
            if canary
            else None
        )
        return route

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
        inp = self.inp
        status = self.status
        replicas = None if self.autoscaled else self.total
        kept: RevisionObservation | None = None
        if status.canary is not None and status.canary.name:
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
                    status, status.canary.name, status.canary.model_version, "Aborted", inp.now,
                    "the spec went back to the stable version", CAUSE_SPEC_REVERTED,
                )  # fmt: skip
                self.event(
                    "Normal", "RolloutAborted",
                    f"spec reverted to {stable}: canary {status.canary.name} dropped",
                )  # fmt: skip
            status.canary = None
        status.current_step = None
        status.step_started_at = None
        status.pause_reason = None
        plans = [RevisionPlan(stable, stable_spec, replicas, "stable")]

        previous = status.previous
        if previous is not None and previous.name and status.bake_until is not None:
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
                status.bake_until = inp.now + timedelta(seconds=inp.policy.bake_seconds)
            if inp.paused or inp.now < status.bake_until:
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
                        f"({previous.name} kept scaled down): it starts again, in full, "
                        "when resumed"
                    )
                else:
                    status.phase = "Progressing"
                    status.message = (
                        f"model {stable_spec.model.version} promoted; baking under analysis "
                        f"until {status.bake_until.isoformat()} ({previous.name} kept scaled "
                        "down)"
                    )
                return self.decision(plans, stable, None, 0, "Baking")
            self.event(
                "Normal", "BakeCompleted", f"{stable} passed its bake; {previous.name} removed"
            )
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
        last = status.history[0] if status.history else None
        if (
            status.phase == "Healthy"
            and last is not None
            and last.revision == stable
            and last.cause == CAUSE_BAKE_FAILED
        ):
            # Its bake failed with nothing to go back to: it serves, but it is not Healthy
            # until a person moves on (a new version, or the old one rolled out again).
            status.phase = "Degraded"
            status.message = (
                f"model {stable_spec.model.version} ({stable}) {last.reason}. It keeps serving "
                "all traffic: apply a fixed version, or revert the spec to roll the previous "
                "version out again."
            )
            reason = CAUSE_BAKE_FAILED
        return self.decision(plans, stable, None, 0, reason)

    def rolling(self, stable: str, stable_spec: ModelDeploymentSpec, verb: str | None) -> Decision:
        inp = self.inp
        status = self.status
        canary = inp.desired
        steps = inp.policy.steps
        if status.previous is not None:
            # A new version while the last one bakes: the bake ends, its fallback goes.
            status.previous = None
            status.bake_until = None
        # A canary that is not mid-rollout (no step: kept serving after the spec went back to
        # stable, whose pods were not ready) starts from the first step when asked for again.
        restart = status.current_step is None and status.phase != "Degraded"
        if status.canary is None or status.canary.name != canary or restart:
            if status.canary is not None and status.canary.name and not restart:
                push_history(
                    status, status.canary.name, status.canary.model_version, "Replaced", inp.now,
                    f"superseded by {canary} before it finished",
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
        aborted = self.is_rolled_back(canary)
        if not aborted and verb == "abort":
            return self.rollback(stable, stable_spec, canary, "Aborted", "aborted by a person")
        if aborted:
            return self.hold_rolled_back(stable, stable_spec, canary)

        canary_obs = self.observed(canary)
        if canary_obs is not None and canary_obs.failed and canary_obs.failure is not None:
            # Its pods do not start (the model does not load, the image cannot be pulled...):
            # no need to wait for the progress deadline.
            return self.rollback(
                stable, stable_spec, canary, "RolledBack", canary_obs.failure_message(),
                cause=canary_obs.failure.cause,
            )  # fmt: skip
        if canary_obs is not None and canary_obs.deadline_exceeded and not canary_obs.ready:
            return self.rollback(
                stable, stable_spec, canary, "RolledBack",
                f"revision {canary} did not become Ready within its progress deadline",
                cause="ProgressDeadlineExceeded",
            )  # fmt: skip
        failure = self.analysis_failure()
        if failure is not None:
            return self.rollback(stable, stable_spec, canary, "RolledBack", failure)

        index = status.current_step or 0
        # While paused by a person the step's clock is stopped (unset); a resume starts the
        # step's pause again, in full, and it needs an analysis interval of its own again.
        started = status.step_started_at or inp.now
        if inp.paused and verb in ("promote", "promote-full"):
            # Argo Rollouts' promote also unpauses; here the pause is the user's annotation, which
            # the operator does not remove: the pause wins and the command is used up.
            self.event(
                "Warning", "CommandIgnored",
                f"{verb} ignored: the rollout is paused (canarium.dev/paused); "
                "resume it, then promote again",
            )  # fmt: skip
            verb = None
        if verb == "promote-full":
            index = len(steps)
            self.event("Normal", "PromotedFully", "promoted to the end by a person")
        held = ""
        while index < len(steps) and not inp.paused:
            weight = self.weight_at(index)
            step = steps[index]
            _, canary_replicas = self.split(weight, stable)
            if step.set_weight is not None:
                if self.ready_count(canary) < canary_replicas:
                    held = f"waiting for {canary} to have {canary_replicas} ready pods"
                    break
            elif step.pause is not None:
                if verb == "promote":
                    verb = None
                    self.event("Normal", "Promoted", f"{self.step_label(index)} ended by a person")
                elif step.pause.duration is None:
                    held = "paused until promoted (kubectl canarium promote)"
                    break
                else:
                    ends = started + timedelta(seconds=step.pause.seconds or 0)
                    if inp.now < ends:
                        self.after(_seconds_until(inp.now, ends))
                        held = f"pausing until {ends.isoformat()}"
                        break
                    gate = self.analysis_gate(started, weight)
                    if gate:
                        held = gate
                        break
            index += 1
            started = inp.now
            if index < len(steps):
                self.event("Normal", "StepStarted", f"{canary}: {self.step_label(index)}")
        if index >= len(steps):
            # Every timed step was gated on analysis; the last setWeight ends the rollout.
            return self.promote(stable, stable_spec, canary)
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
        inconclusive = status.analysis.consecutive_inconclusive if status.analysis else 0
        limit = inp.policy.analysis.inconclusive_limit if inp.policy.analysis else None
        paused_by_data = limit is not None and 0 < limit <= inconclusive  # 0: never
        if inp.paused or paused_by_data or held.startswith("paused until promoted"):
            status.phase = "Paused"
            status.pause_reason = (
                "paused by a person (canarium.dev/paused)"
                if inp.paused
                else f"{inconclusive} inconclusive "
                f"intervals in a row (inconclusiveLimit {limit}): check the traffic, then promote"
                if paused_by_data
                else held
            )
            reason = "Paused"
        else:
            status.phase = "Progressing"
            status.pause_reason = None
            reason = "RolloutInProgress"
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
        if self.inp.policy.analysis is None:
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
        status.steps_hash = steps_hash(self.inp.policy.steps)
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
        status = self.status
        # A rollout ended by the spec going back to stable is not held: asking for the
        # version again is a person's new request.
        return bool(
            status.phase == "Degraded"
            and status.history
            and status.history[0].revision == canary
            and status.history[0].outcome in ("RolledBack", "Aborted")
            and status.history[0].cause != CAUSE_SPEC_REVERTED
        )

    def rollback(
        self,
        stable: str,
        stable_spec: ModelDeploymentSpec,
        canary: str,
        outcome: Outcome,
        why: str,
        cause: str | None = None,
    ) -> Decision:
        """Roll the canary back: `cause` is the typed reason (the Degraded condition's), kept
        in the history entry so that every later reconcile reports the same."""
        status = self.status
        cause = cause or ("AnalysisFailed" if outcome == "RolledBack" else "Aborted")
        push_history(status, canary, self.inp.spec.model.version, outcome, self.inp.now, why, cause)
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
        last = status.history[0]  # the rollback's: rollback() or an earlier reconcile wrote it
        status.phase = "Degraded"
        status.current_step = None
        status.step_started_at = None
        status.pause_reason = None
        status.message = (
            f"model {self.inp.spec.model.version} ({canary}) was "
            f"{'rolled back' if last.outcome == 'RolledBack' else 'aborted'}: "
            f"{last.reason}. Traffic is on {stable} (model "
            f"{stable_spec.model.version}). Revert the spec, apply a new version, or "
            f"`kubectl canarium retry`."
        )
        plans = [
            RevisionPlan(stable, stable_spec, replicas, "stable"),
            RevisionPlan(canary, self.inp.spec, canary_replicas, "canary"),
        ]
        return self.decision(plans, stable, canary, route, rollback_cause(last))

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
        bake = inp.policy.bake_seconds
        if bake > 0 and inp.policy.analysis is not None:
            status.previous = RevisionStatus(
                name=stable, model_version=stable_spec.model.version, replicas=0, weight=0
            )
            status.bake_until = inp.now + timedelta(seconds=bake)
            status.analysis = AnalysisStatus()
            plans.append(RevisionPlan(stable, stable_spec, 0, "previous"))
            self.after(bake)
            self.schedule_analysis()
            status.phase = "Progressing"
            status.message = (
                f"model {inp.spec.model.version} promoted; baking for {inp.policy.bake}"
            )
            reason = "Baking"
        else:
            status.previous = None
            status.bake_until = None
            status.analysis = None
            status.phase = "Healthy"
            status.message = f"model {inp.spec.model.version} served by {canary}"
            reason = "Available"
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
            status.history[0] = last.model_copy(update={"reason": why, "cause": CAUSE_BAKE_FAILED})
        else:
            push_history(
                status, promoted, promoted_spec.model.version, "Promoted", inp.now, why,
                CAUSE_BAKE_FAILED,
            )  # fmt: skip
        self.event("Warning", CAUSE_BAKE_FAILED, f"{promoted} {why}")
        status.previous = None
        status.bake_until = None
        return self.steady(promoted, promoted_spec)


def rollback_cause(entry: HistoryEntry | None) -> str:
    """The condition reason of a rolled-back or aborted revision, from its history entry."""
    if entry is not None and entry.cause:
        return entry.cause
    # Entries written before the cause was recorded.
    if entry is not None and entry.reason and "progress deadline" in entry.reason:
        return "ProgressDeadlineExceeded"
    return "AnalysisFailed" if entry is not None and entry.outcome == "RolledBack" else "Aborted"


def _fmt(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.4g}"


def decide(inp: RolloutInput) -> Decision:
    """The rollout decision for one ModelDeployment under a RolloutPolicy."""
    decision = _Machine(inp).run()
    keep_serving(inp.revisions, decision)
    return decision


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
