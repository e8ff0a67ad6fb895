"""reconcile(input) -> Plan: what a ModelDeployment's children and status should be. Pure.

The I/O layer (canarium.controller) gathers the input from its watch caches, applies the plan's
children by server-side apply, deletes what the plan drops, patches the status subresource and
records the events. Running it twice on the same input gives the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from canarium_serving import contract

from canarium.api import (
    CONDITION_DEGRADED,
    CONDITION_PROGRESSING,
    CONDITION_READY,
    Condition,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RevisionStatus,
    RolloutPolicySpec,
)
from canarium.api.status import MAX_HISTORY
from canarium.render import (
    ANNOTATION_CREATED_AS,
    LABEL_REVISION,
    endpoint,
    hash_of_revision,
    render_hpa,
    render_revision,
    render_services,
    revision_hash,
    revision_name,
    spec_of_revision,
)
from canarium.settings import Settings

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


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


@dataclass(frozen=True)
class RevisionObservation:
    """What the operator sees of one revision's Deployment."""

    name: str
    rev_hash: str
    spec: ModelDeploymentSpec | None  # the spec it was rendered from
    created_as: str
    replicas: int  # spec.replicas
    ready_replicas: int
    updated_replicas: int
    up_to_date: bool  # the Deployment controller has seen the latest generation
    deadline_exceeded: bool  # progressDeadlineSeconds passed without progress

    @property
    def ready(self) -> bool:
        return (
            self.up_to_date
            and self.ready_replicas >= self.replicas > 0
            and (self.updated_replicas >= self.replicas)
        )


def observe_deployment(body: dict[str, Any]) -> RevisionObservation:
    """Summarise a revision Deployment as the API server returns it."""
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
    )


@dataclass(frozen=True)
class ReconcileInput:
    mdep: ModelDeployment
    revisions: dict[str, RevisionObservation]  # observed revision Deployments by name
    now: datetime
    settings: Settings
    hpas: frozenset[str] = frozenset()  # observed HorizontalPodAutoscaler names
    policy: RolloutPolicySpec | None = None
    policy_error: str | None = None  # e.g. the referenced RolloutPolicy does not exist


def effective_weights(stable_ready: int, canary_ready: int) -> tuple[float, float]:
    """(stable, canary) percentages that a Service over both revisions' ready pods delivers."""
    total = stable_ready + canary_ready
    if total == 0:
        return 0.0, 0.0
    canary = round(100.0 * canary_ready / total, 2)
    return round(100.0 - canary, 2), canary


def reconcile(inp: ReconcileInput) -> Plan:
    """The plan for one ModelDeployment: children to apply and delete, the new status, events."""
    mdep = inp.mdep
    name = mdep.metadata.name
    spec = mdep.spec
    old = mdep.status
    status = old.model_copy(deep=True)
    plan = Plan()
    desired = revision_name(name, revision_hash(spec))
    replicas = None if spec.serving.autoscaling else spec.serving.replicas

    # --- decide which revisions serve --------------------------------------------------
    stable_name = old.stable.name if old.stable and old.stable.name else desired
    stable_obs = inp.revisions.get(stable_name)
    stable_spec = spec if stable_name == desired else (stable_obs.spec if stable_obs else None)
    if stable_spec is None:
        # The stable revision's Deployment (and the spec it carried) is gone or unreadable:
        # start over from the spec the user asks for now.
        stable_name, stable_spec, stable_obs = desired, spec, inp.revisions.get(desired)
    canary_name = desired if stable_name != desired else None
    canary_obs = inp.revisions.get(desired) if canary_name else None

    if canary_name and canary_obs is not None and canary_obs.ready:
        # The new revision is Ready: it replaces the old one, which goes in this same plan.
        plan.events.append(
            Event(
                "Normal",
                "Replaced",
                f"revision {canary_name} (model {spec.model.version}) is Ready and replaces "
                f"{stable_name}",
            )
        )
        status.history = _push_history(
            status.history,
            HistoryEntry(
                revision=stable_name,
                model_version=stable_spec.model.version,
                outcome="Replaced",
                time=inp.now,
                reason=f"replaced by {canary_name}",
            ),
        )
        stable_name, stable_spec, stable_obs = canary_name, spec, canary_obs
        canary_name, canary_obs = None, None

    # --- render --------------------------------------------------------------------------
    def apply_revision(rev: str, rev_spec: ModelDeploymentSpec, role: str) -> None:
        observed = inp.revisions.get(rev)
        created_as = observed.created_as if observed else role
        rev_hash = hash_of_revision(name, rev)
        plan.apply.append(
            render_revision(
                mdep,
                rev_hash,
                spec=rev_spec,
                replicas=replicas,
                role=role,
                created_as=created_as,
                settings=inp.settings,
            )
        )
        hpa = render_hpa(mdep, rev_hash)
        if hpa:
            plan.apply.append(hpa)

    # Without a rollout policy a new revision is not a canary under analysis: it is created
    # as what it will become, the stable one.
    apply_revision(stable_name, stable_spec, contract.ROLE_STABLE)
    if canary_name:
        apply_revision(canary_name, spec, contract.ROLE_STABLE)
    plan.apply.extend(
        render_services(
            mdep,
            hash_of_revision(name, stable_name),
            hash_of_revision(name, canary_name) if canary_name else None,
        )
    )
    keep = {stable_name} | ({canary_name} if canary_name else set())
    plan.delete.extend(
        ChildRef("apps/v1", "Deployment", rev) for rev in sorted(inp.revisions) if rev not in keep
    )
    keep_hpas = keep if spec.serving.autoscaling else set()
    plan.delete.extend(
        ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", hpa)
        for hpa in sorted(inp.hpas)
        if hpa not in keep_hpas
    )

    # --- status --------------------------------------------------------------------------
    stable_ready = stable_obs.ready_replicas if stable_obs else 0
    canary_ready = canary_obs.ready_replicas if canary_obs else 0
    stable_effective, canary_effective = effective_weights(stable_ready, canary_ready)
    status.stable = RevisionStatus(
        name=stable_name,
        model_version=stable_spec.model.version,
        replicas=stable_obs.replicas if stable_obs else replicas,
        ready_replicas=stable_ready,
        weight=0 if canary_name else 100,
        effective_weight=stable_effective,
    )
    status.canary = None
    if canary_name:
        status.canary = RevisionStatus(
            name=canary_name,
            model_version=spec.model.version,
            replicas=canary_obs.replicas if canary_obs else replicas,
            ready_replicas=canary_ready,
            weight=100,
            effective_weight=canary_effective,
        )
    desired_pods = (status.stable.replicas or 0) + (
        (status.canary.replicas or 0) if status.canary else 0
    )
    status.ready = f"{stable_ready + canary_ready}/{desired_pods}"
    status.endpoint = endpoint(mdep)
    status.observed_generation = mdep.metadata.generation
    status.current_step = None
    status.step_started_at = None
    status.pause_reason = None

    newest = canary_obs if canary_name else stable_obs
    if newest is not None and newest.deadline_exceeded and not newest.ready:
        status.phase = "Degraded"
        reason = "ProgressDeadlineExceeded"
        status.message = (
            f"revision {newest.name} did not become Ready within "
            f"{inp.settings.progress_deadline_seconds}s"
        ) + (f"; traffic stays on {stable_name}" if canary_name else "")
    elif canary_name:
        status.phase = "Progressing"
        reason = "NewRevisionNotReady"
        status.message = (
            f"revision {canary_name} (model {spec.model.version}) "
            f"{canary_ready}/{status.canary.replicas if status.canary else 0} ready; "
            f"{stable_name} keeps serving"
        )
    elif stable_obs is not None and stable_obs.ready:
        status.phase = "Healthy"
        reason = "Available"
        status.message = f"model {stable_spec.model.version} served by {stable_name}"
    else:
        status.phase = "Progressing"
        reason = "ReplicasNotReady"
        status.message = f"revision {stable_name} {stable_ready}/{status.stable.replicas} ready"

    _set_conditions(status, mdep.metadata.generation, inp.now, reason)
    if old.phase != status.phase:
        plan.events.append(
            Event(
                "Warning" if status.phase == "Degraded" else "Normal",
                status.phase,
                status.message or "",
            )
        )
    plan.status = status.to_dict()
    return plan


def _push_history(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    return [entry, *history][:MAX_HISTORY]


def _set_conditions(
    status: ModelDeploymentStatus, generation: int, now: datetime, reason: str
) -> None:
    """Ready, Progressing and Degraded from the phase, in the metav1.Condition form.

    Ready: the current generation is fully served. Progressing: a change is being rolled out.
    Degraded: something failed and needs a person (traffic is on the last good revision).
    """
    phase = status.phase
    message = status.message or ""
    values: dict[str, Literal["True", "False"]] = {
        CONDITION_READY: "True" if phase == "Healthy" else "False",
        CONDITION_PROGRESSING: "True" if phase in ("Progressing", "Paused") else "False",
        CONDITION_DEGRADED: "True" if phase == "Degraded" else "False",
    }
    by_type = {c.type: c for c in status.conditions}
    for type_, value in values.items():
        previous = by_type.get(type_)
        changed = previous is None or previous.status != value
        by_type[type_] = Condition(
            type=type_,
            status=value,
            observed_generation=generation,
            last_transition_time=now
            if changed or previous is None
            else previous.last_transition_time,
            reason=reason,
            message=message,
        )
    status.conditions = [
        by_type[t] for t in (CONDITION_READY, CONDITION_PROGRESSING, CONDITION_DEGRADED)
    ]
