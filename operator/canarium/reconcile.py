"""reconcile(input) -> Plan: what a ModelDeployment's children and status should be. Pure.

The I/O layer (canarium.controller) gathers the input from its watch caches, applies the plan's
children by server-side apply, deletes what the plan drops, patches the status subresource and
records the events. Running it twice on the same input gives the same plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from canarium_serving import contract
from pydantic import ValidationError

from canarium.analysis import MeasuredWindow, judge, monitoring
from canarium.analysis.monitoring import MonitoringWindow
from canarium.api import (
    CONDITION_DEGRADED,
    CONDITION_DRIFTED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    Condition,
    ModelDeployment,
    ModelDeploymentStatus,
    Reason,
    RetrainedStatus,
    RolloutPolicySpec,
    RolloutPolicyStatus,
)
from canarium.api.status import CONDITION_RECONCILING, CONDITION_STALLED, CONDITION_TYPES
from canarium.observation import RevisionObservation
from canarium.pods import revision_failures
from canarium.render import (
    ANNOTATION_CREATED_AS,
    LABEL_REVISION,
    endpoint,
    grpc_endpoint,
    hash_of_revision,
    render_hpa,
    render_revision,
    render_services,
    revision_hash,
    revision_name,
    spec_of_revision,
)
from canarium.rollout import (
    ANNOTATION_COMMAND,
    ANNOTATION_PAUSED,
    AnalysisRun,
    Event,
    RolloutInput,
    decide,
)
from canarium.routers import router_for
from canarium.settings import Settings


@dataclass(frozen=True, order=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass
class Plan:
    """What the I/O layer does for one ModelDeployment."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds; None: wait for the next watch event


def observe_deployment(
    body: dict[str, Any], pods: Iterable[dict[str, Any]] = ()
) -> RevisionObservation:
    """Summarise a revision Deployment and its pods (those with its revision label) as the
    API server returns them."""
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    deadline = any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
    )
    failure, failing = revision_failures(pods)
    return RevisionObservation(
        name=meta.get("name", ""),
        rev_hash=(meta.get("labels") or {}).get(LABEL_REVISION, ""),
        spec=spec_of_revision(body),
        created_as=(meta.get("annotations") or {}).get(ANNOTATION_CREATED_AS, contract.ROLE_STABLE),
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        up_to_date=int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 1)),
        deadline_exceeded=deadline,
        failure=failure,
        failing_pods=failing,
    )


@dataclass(frozen=True)
class ReconcileInput:
    mdep: ModelDeployment
    revisions: dict[str, RevisionObservation]  # observed revision Deployments (and pods) by name
    now: datetime
    settings: Settings
    hpas: frozenset[str] = frozenset()  # observed HorizontalPodAutoscaler names
    routed: frozenset[ChildRef] = frozenset()  # observed objects of the routers' kinds
    policy: RolloutPolicySpec | None = None
    policy_error: str | None = None  # e.g. the referenced RolloutPolicy does not exist
    analysis_run: AnalysisRun | None = None  # a judged interval (tests hand one in)
    analysis_window: MeasuredWindow | None = None  # a measured interval, judged here
    monitoring_window: MonitoringWindow | None = None  # the stable's window, judged here
    # A ModelRetraining's candidate, served in place of spec.model (mdep.spec already carries
    # it: the controller swapped it in), and whence it came.
    retrained: RetrainedStatus | None = None


def judge_window(
    policy: RolloutPolicySpec | None, status: ModelDeploymentStatus, window: MeasuredWindow
) -> AnalysisRun | None:
    """The measured interval judged with the evidence gathered so far (in status): the run the
    state machine records. None when the policy no longer analyses."""
    analysis = policy.analysis if policy else None
    if analysis is None:
        return None
    if window.result is None:
        return AnalysisRun(window.time, None)
    evidence = status.analysis.evidence if status.analysis else []
    judgement = judge(
        analysis,
        window.result.canary,
        window.result.stable,
        window.time,
        window.custom,
        window.no_data,
        evidence,
    )
    return AnalysisRun(window.time, judgement)


def rollout_input(inp: ReconcileInput) -> RolloutInput:
    """The state machine's view of the input."""
    mdep = inp.mdep
    annotations = mdep.metadata.annotations
    return RolloutInput(
        spec=mdep.spec,
        desired=revision_name(mdep.metadata.name, revision_hash(mdep.spec)),
        status=mdep.status,
        policy=inp.policy,
        revisions=inp.revisions,
        now=inp.now,
        router=router_for(mdep.spec.traffic.router),
        progress_deadline_seconds=inp.settings.progress_deadline_seconds,
        policy_error=inp.policy_error,
        analysis_run=inp.analysis_run
        if inp.analysis_window is None
        else judge_window(inp.policy, mdep.status, inp.analysis_window),
        command=annotations.get(ANNOTATION_COMMAND),
        paused=annotations.get(ANNOTATION_PAUSED, "").lower() == "true",
    )


def reconcile(inp: ReconcileInput) -> Plan:
    """The plan for one ModelDeployment: children to apply and delete, the new status, events."""
    mdep = inp.mdep
    name = mdep.metadata.name
    old = mdep.status
    decision = decide(rollout_input(inp))
    status = decision.status
    plan = Plan(events=list(decision.events), requeue_after=decision.requeue_after)

    for rev in decision.revisions:
        observed = inp.revisions.get(rev.name)
        rev_hash = hash_of_revision(name, rev.name)
        plan.apply.append(
            render_revision(
                mdep,
                rev_hash,
                spec=rev.spec,
                replicas=rev.replicas,
                role=rev.role,
                # The role baked into the pods' env is the one a revision was created for.
                created_as=observed.created_as if observed else rev.role,
                settings=inp.settings,
            )
        )
        hpa = render_hpa(mdep, rev_hash) if rev.replicas is None else None
        if hpa:
            plan.apply.append(hpa)
    stable_hash = hash_of_revision(name, decision.stable)
    canary_hash = hash_of_revision(name, decision.canary) if decision.canary else None
    plan.apply.extend(render_services(mdep, stable_hash, canary_hash))
    routed = router_for(mdep.spec.traffic.router).render(
        mdep, decision.route_canary_weight, decision.canary is not None
    )
    plan.apply.extend(routed)

    keep = {rev.name for rev in decision.revisions}
    plan.delete.extend(
        ChildRef("apps/v1", "Deployment", rev) for rev in sorted(inp.revisions) if rev not in keep
    )
    keep_hpas = {rev.name for rev in decision.revisions if rev.replicas is None}
    plan.delete.extend(
        ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", hpa)
        for hpa in sorted(inp.hpas)
        if hpa not in keep_hpas
    )
    # What a router made and no longer renders: e.g. the HTTPRoute after a switch to replicas.
    keep_routed = {ChildRef(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in routed}
    plan.delete.extend(ref for ref in sorted(inp.routed) if ref not in keep_routed)

    ready = sum(
        inp.revisions[r.name].ready_replicas for r in decision.revisions if r.name in inp.revisions
    )
    wanted = sum(
        (
            r.replicas
            if r.replicas is not None
            else (inp.revisions[r.name].replicas if r.name in inp.revisions else 0)
        )
        for r in decision.revisions
    )
    status.ready = f"{ready}/{wanted}"
    status.endpoint = endpoint(mdep)
    status.grpc_endpoint = grpc_endpoint(mdep)
    status.observed_generation = mdep.metadata.generation
    reason = decision.reason
    if inp.policy_error and mdep.spec.rollout is not None:
        if decision.reason == Reason.POLICY_NOT_FOUND:
            then = "the rollout holds"
        elif mdep.status.stable is not None:
            then = "a new version waits for it"
        else:
            then = "the first revision is served without it"
        status.message = f"{inp.policy_error}; {then}. " + (status.message or "")
        # "RolloutPolicy 'x' not found", or "RolloutPolicy 'x' is invalid: <validation error>":
        # that error quotes the user's values (any text) and ends with its own last line.
        missing = inp.policy_error.endswith(" not found")
        reason = Reason.POLICY_NOT_FOUND if missing else Reason.POLICY_INVALID
    _set_conditions(status, mdep.metadata.generation, inp.now, reason)
    _monitor(inp, status, plan)
    status.retrained = inp.retrained
    if old.phase != status.phase:
        plan.events.append(
            Event(
                "Warning" if status.phase == "Degraded" else "Normal",
                status.phase or "Unknown",
                status.message or "",
            )
        )
    plan.status = status.to_dict()
    return plan


DRIFT_REASONS = {"True": "Drifted", "False": "NoDrift", "Unknown": "NotJudged"}


def monitored_revision(status: ModelDeploymentStatus) -> str | None:
    """The stable revision monitoring watches now: none while a rollout or a bake runs (its
    analysis judges then) or before there is a stable revision."""
    if status.canary is not None or status.previous is not None or status.stable is None:
        return None
    return status.stable.name or None


def _monitor(inp: ReconcileInput, status: ModelDeploymentStatus, plan: Plan) -> None:
    """spec.monitoring: judge the stable revision's measured window, keep the Drifted
    condition, say when it changes, and look again when the next window is due."""
    spec = inp.mdep.spec.monitoring
    old = inp.mdep.status.monitoring
    if spec is None:
        status.monitoring = None
        return
    revision = monitored_revision(status)
    if revision is None:
        # Paused while a rollout runs; the next window starts when it has ended.
        status.monitoring = old.model_copy(update={"window_start": None}) if old else None
        _drift_condition(status, inp, old_status=inp.mdep.status)
        return
    current = old if old is not None and old.revision == revision else None
    window = inp.monitoring_window
    if window is not None and window.revision == revision:
        if window.metrics is None:
            current = monitoring.started(revision, window.time, current)
        elif current is not None and current.window_start is not None:
            drift = monitoring.judge_window(spec, window.metrics)
            current = monitoring.judged(spec, current, drift, window.time)
    status.monitoring = current
    _drift_condition(status, inp, old_status=inp.mdep.status)
    was = inp.mdep.status.condition(CONDITION_DRIFTED)
    now = status.condition(CONDITION_DRIFTED)
    if now is not None and current is not None and (was is None or was.status != now.status):
        if now.status == "True":
            plan.events.append(Event("Warning", "Drifted", current.message or ""))
        elif was is not None and was.status == "True":
            plan.events.append(Event("Normal", "DriftCleared", current.message or ""))
    _, wait = monitoring.due(spec, current, revision, inp.now)
    if plan.requeue_after is None or wait < plan.requeue_after:
        plan.requeue_after = max(wait, 0.0)


def _drift_condition(
    status: ModelDeploymentStatus, inp: ReconcileInput, old_status: ModelDeploymentStatus
) -> None:
    """The Drifted condition from the monitoring status: True (sustained drift), False (a
    window judged without it since), Unknown (nothing judged yet for this revision)."""
    spec = inp.mdep.spec.monitoring
    current = status.monitoring
    if spec is None:
        return
    value: Literal["True", "False", "Unknown"]
    if current is None or current.last_verdict is None:
        value = "Unknown"
    elif monitoring.is_drifted(spec, current):
        value = "True"
    elif current.consecutive_drifted == 0:
        value = "False"
    else:  # drifted windows, fewer than `windows` in a row: True stays until a clean one
        previous = old_status.condition(CONDITION_DRIFTED)
        value = "True" if previous is not None and previous.status == "True" else "False"
    previous = old_status.condition(CONDITION_DRIFTED)
    message = (current.message if current is not None else None) or (
        "no monitoring window judged yet"
    )
    condition = Condition(
        type=CONDITION_DRIFTED,
        status=value,
        observed_generation=inp.mdep.metadata.generation,
        last_transition_time=inp.now
        if previous is None or previous.status != value
        else previous.last_transition_time,
        reason=DRIFT_REASONS[value],
        message=message[:32768],
    )
    status.conditions = [
        *(c for c in status.conditions if c.type != CONDITION_DRIFTED),
        condition,
    ]


def condition_values(phase: str | None, reason: str) -> dict[str, Literal["True", "False"]]:
    """The value of every condition for a phase and the conditions' reason.

    Ready: the current generation is fully served. Progressing: a change is being rolled out
    (or baking). Degraded: something failed and needs a person (traffic is on the last good
    revision). For kstatus (Flux): Reconciling while work is under way or waits (a pause reads
    as InProgress with its reason, never as Failed: a person may promote), Stalled where it
    ended and only a person moves it on (Failed at once, instead of Flux waiting for its
    timeout). Never both, and both False when Healthy, so kstatus reads Ready: Current.
    """
    # An invalid policy holds a new version until a person fixes it; a first revision served
    # without it (Healthy) is not held.
    stalled = phase == "Degraded" or (reason == Reason.POLICY_INVALID and phase != "Healthy")
    working = phase in ("Pending", "Progressing", "Paused") or phase is None
    return {
        # During a bake the promoted version already serves everything: Ready, and still
        # Progressing until the bake is over.
        CONDITION_READY: "True" if phase == "Healthy" or reason == Reason.BAKING else "False",
        CONDITION_PROGRESSING: "True" if phase in ("Progressing", "Paused") else "False",
        CONDITION_DEGRADED: "True" if phase == "Degraded" else "False",
        CONDITION_RECONCILING: "True" if working and not stalled else "False",
        CONDITION_STALLED: "True" if stalled else "False",
    }


def _set_conditions(
    status: ModelDeploymentStatus, generation: int, now: datetime, reason: str
) -> None:
    """Every condition type in the metav1.Condition form (see condition_values), with this
    generation; a condition's lastTransitionTime moves only when its status changes."""
    message = status.message or ""
    by_type = {c.type: c for c in status.conditions}
    for type_, value in condition_values(status.phase, reason).items():
        previous = by_type.get(type_)
        by_type[type_] = Condition(
            type=type_,
            status=value,
            observed_generation=generation,
            last_transition_time=now
            if previous is None or previous.status != value
            else previous.last_transition_time,
            reason=reason,
            message=message,
        )
    status.conditions = [by_type[t] for t in CONDITION_TYPES]


POLICY_VALID = "Valid"
POLICY_INVALID = "Invalid"


def policy_problems(exc: ValidationError) -> str:
    """A validation error in one line per problem, by field path (no pydantic URLs)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'spec'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


def policy_status(body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What a RolloutPolicy's status should say: Ready=True when its spec is valid (what the
    READY column and `kubectl wait --for=condition=Ready rpol/x` read), else Ready=False and
    Stalled=True with reason Invalid and the problems (kstatus: Failed, Argo CD: Degraded),
    with observedGeneration, so GitOps tools see that the operator has checked this
    generation. The API server's schema refuses most invalid policies; this catches the rest
    (e.g. one stored before a CRD upgrade). lastTransitionTime moves only with a status."""
    meta = body.get("metadata") or {}
    try:
        RolloutPolicySpec.model_validate(body.get("spec") or {})
        reason, message = POLICY_VALID, "the policy is valid"
    except ValidationError as exc:
        reason, message = POLICY_INVALID, f"the policy is invalid: {policy_problems(exc)}"
    generation = meta.get("generation")
    try:
        old = RolloutPolicyStatus.model_validate(body.get("status") or {})
        previous = {c.type: c for c in old.conditions}
    except ValidationError:  # a status someone else wrote: replaced
        previous = {}
    valid = reason == POLICY_VALID
    values: dict[str, Literal["True", "False"]] = {
        CONDITION_READY: "True" if valid else "False",
        CONDITION_STALLED: "False" if valid else "True",
    }
    conditions = []
    for type_, value in values.items():
        before = previous.get(type_)
        conditions.append(
            Condition(
                type=type_,
                status=value,
                observed_generation=generation,
                last_transition_time=now
                if before is None or before.status != value
                else before.last_transition_time,
                reason=reason,
                message=message[:32768],
            )
        )
    return RolloutPolicyStatus(observed_generation=generation, conditions=conditions).to_dict()
