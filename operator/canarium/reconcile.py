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

from canarium.api import (
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    Condition,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
    RolloutPolicySpec,
)
from canarium.pods import revision_failures
from canarium.render import (
    ANNOTATION_CREATED_AS,
    LABEL_REVISION,
    endpoint,
    hash_of_revision,
    render_hpa,
    render_httproute,
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
    Decision,
    Event,
    RevisionObservation,
    RevisionPlan,
    RolloutInput,
    decide,
    effective_weights,
    push_history,
    serving_phase,
)
from canarium.settings import Settings


@dataclass(frozen=True)
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
    policy: RolloutPolicySpec | None = None
    policy_error: str | None = None  # e.g. the referenced RolloutPolicy does not exist
    analysis_run: AnalysisRun | None = None


def rollout_input(inp: ReconcileInput) -> RolloutInput | None:
    """The state machine's view of the input; None without a rollout policy."""
    if inp.policy is None:
        return None
    mdep = inp.mdep
    annotations = mdep.metadata.annotations
    return RolloutInput(
        spec=mdep.spec,
        desired=revision_name(mdep.metadata.name, revision_hash(mdep.spec)),
        status=mdep.status,
        policy=inp.policy,
        revisions=inp.revisions,
        now=inp.now,
        router=mdep.spec.traffic.router,
        analysis_run=inp.analysis_run,
        command=annotations.get(ANNOTATION_COMMAND),
        paused=annotations.get(ANNOTATION_PAUSED, "").lower() == "true",
    )


def replace_decision(inp: ReconcileInput) -> Decision:
    """No rollout policy: a new revision runs beside the old one at full size and replaces it
    once Ready, so nothing serves a gap."""
    mdep = inp.mdep
    spec = mdep.spec
    status = mdep.status.model_copy(deep=True)
    events: list[Event] = []
    desired = revision_name(mdep.metadata.name, revision_hash(spec))
    # A command has nothing to act on without a policy; it is used up now, not carried out
    # on a later rollout once a policy appears.
    status.last_command = mdep.metadata.annotations.get(ANNOTATION_COMMAND, status.last_command)
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
    stable_effective, canary_effective = effective_weights(stable_ready, canary_ready)
    # An HTTPRoute keeps everything on the old revision until the new one replaces it, unless
    # only the new one has ready pods; the entry Service spreads over both revisions' pods.
    route_weight = 100 if canary_ready and not stable_ready else 0
    if mdep.spec.traffic.router == "gatewayAPI" and stable_ready + canary_ready:
        stable_effective, canary_effective = 100.0 - route_weight, float(route_weight)
    status.stable = RevisionStatus(
        name=stable_name,
        model_version=stable_spec.model.version,
        replicas=stable_obs.replicas if stable_obs else replicas,
        ready_replicas=stable_ready,
        weight=0 if canary_name else 100,
        effective_weight=stable_effective,
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
            effective_weight=canary_effective,
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
    elif canary_obs is not None and canary_obs.failed and canary_obs.failure is not None:
        # Its pods do not start: said at once, not after the progress deadline. It is kept (and
        # its Deployment keeps trying), so a fix elsewhere (a corrected ConfigMap, a pushed
        # image) lets it replace the old revision; a new spec replaces it.
        status.phase = "Degraded"
        reason = canary_obs.failure.cause
        status.message = f"{canary_obs.failure_message()}; traffic stays on {stable_name}"
    elif canary_obs is not None and canary_obs.deadline_exceeded:
        status.phase = "Degraded"
        reason = "ProgressDeadlineExceeded"
        status.message = (
            f"revision {canary_name} did not become Ready within "
            f"{inp.settings.progress_deadline_seconds}s; traffic stays on {stable_name}"
        )
    else:
        status.phase = "Progressing"
        reason = "NewRevisionNotReady"
        status.message = (
            f"revision {canary_name} (model {spec.model.version}) "
            f"{canary_ready}/{canary_pods if canary_pods is not None else '?'} ready; "
            f"{stable_name} keeps serving"
        )
        if canary_obs is not None and canary_obs.failure is not None:
            status.message += f"; {canary_obs.failure.describe()}"

    plans = [RevisionPlan(stable_name, stable_spec, replicas, "stable")]
    if canary_name:
        # Not a canary under analysis: it is created as what it will become, the stable one.
        plans.append(RevisionPlan(canary_name, spec, replicas, "stable"))
    return Decision(
        status=status,
        revisions=plans,
        stable=stable_name,
        canary=canary_name,
        route_canary_weight=route_weight,
        reason=reason,
        events=events,
    )


def policy_hold_decision(inp: ReconcileInput) -> Decision | None:
    """The referenced RolloutPolicy is missing or invalid while a stable revision serves and a
    new one is asked for: nothing moves until the policy is back (its watch event wakes the
    ModelDeployment). A canary keeps its pods, its weight and its step; a new version waits.
    A missing policy never promotes an unjudged canary (GitOps tools may apply a
    ModelDeployment before the policy it names). None: nothing to hold."""
    mdep = inp.mdep
    if not inp.policy_error or mdep.spec.rollout is None:
        return None
    status = mdep.status.model_copy(deep=True)
    desired = revision_name(mdep.metadata.name, revision_hash(mdep.spec))
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
    else:
        canary = None
        status.message = f"model {mdep.spec.model.version} waits for it"
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
        reason="PolicyNotFound",
    )


def reconcile(inp: ReconcileInput) -> Plan:
    """The plan for one ModelDeployment: children to apply and delete, the new status, events."""
    mdep = inp.mdep
    name = mdep.metadata.name
    old = mdep.status
    r_inp = rollout_input(inp)
    held = policy_hold_decision(inp) if r_inp is None else None
    decision = decide(r_inp) if r_inp is not None else held or replace_decision(inp)
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
    route = render_httproute(mdep, decision.route_canary_weight, decision.canary is not None)
    if route:
        plan.apply.append(route)

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
    status.observed_generation = mdep.metadata.generation
    reason = decision.reason
    if inp.policy_error and mdep.spec.rollout is not None:
        if held:
            then = "the rollout holds"
        elif mdep.status.stable is not None:
            then = "a new version waits for it"
        else:
            then = "the first revision is served without it"
        status.message = f"{inp.policy_error}; {then}. " + (status.message or "")
        # "RolloutPolicy 'x' not found", or "RolloutPolicy 'x' is invalid: <validation error>":
        # that error quotes the user's values (any text) and ends with its own last line.
        missing = inp.policy_error.endswith(" not found")
        reason = "PolicyNotFound" if missing else "PolicyInvalid"
    _set_conditions(status, mdep.metadata.generation, inp.now, reason)
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


def _set_conditions(
    status: ModelDeploymentStatus, generation: int, now: datetime, reason: str
) -> None:
    """Ready, Progressing and Degraded from the phase, in the metav1.Condition form.

    Ready: the current generation is fully served. Progressing: a change is being rolled out
    (or baking).
    Degraded: something failed and needs a person (traffic is on the last good revision).
    """
    phase = status.phase
    message = status.message or ""
    values: dict[str, Literal["True", "False"]] = {
        # During a bake the promoted version already serves everything: Ready, and still
        # Progressing until the bake is over.
        CONDITION_READY: "True" if phase == "Healthy" or reason == "Baking" else "False",
        CONDITION_PROGRESSING: "True" if phase in ("Progressing", "Paused") else "False",
        CONDITION_DEGRADED: "True" if phase == "Degraded" else "False",
    }
    by_type = {c.type: c for c in status.conditions}
    for type_, value in values.items():
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
    status.conditions = [
        by_type[t] for t in (CONDITION_READY, CONDITION_PROGRESSING, CONDITION_DEGRADED)
    ]
